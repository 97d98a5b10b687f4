"""Pure tensor math for RLHF: masking, KL, rewards, advantages, losses, sampling filters, metrics.

Nothing here does I/O or touches Ray/DeepSpeed; every function maps tensors
to tensors (or Python floats for metrics).

Importing the package registers the built-in advantage estimators, policy losses and KL estimators
(algo/registry.py) without importing torch, so the config schema can read their names; the tensor
functions below load on first use (`from rlhf_dist.algo import gae` imports algo/advantages.py then).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# the built-ins register themselves on import
from rlhf_dist.algo import dpo_losses, estimators, kl_estimators, policy_losses  # noqa: F401

# Public name -> the module that defines it.
_HOMES = {
    "dpo": ("preference_losses", "reduce_dpo", "smoothed_target"),
    "advantages": ("broadcast_sequence_advantages", "discounted_returns", "dr_grpo_advantages", "gae",
                   "grpo_advantages", "reinforce_pp_advantages", "rloo_advantages"),
    "kl": ("AdaptiveKLController", "FixedKLController", "KLController", "build_kl_controller", "kl_estimate",
           "kl_penalized_rewards", "last_valid_index"),
    "losses": ("aggregate_loss", "bradley_terry_loss", "entropy_from_logits", "logprobs_from_logits",
               "ppo_policy_loss", "resolve_loss_aggregation", "truncated_is_weights", "value_loss"),
    "masked": ("masked_mean", "masked_sum", "masked_var", "masked_whiten"),
    "metrics": ("calibration", "kendall_tau", "mean_kendall_tau", "pairwise_accuracy", "reward_margin_stats"),
    "rewards": ("RunningMeanStd", "clip_rewards", "overlong_penalty"),
    "sampling": ("group_sample_indices", "keep_informative_groups"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    """Load a tensor function's module on first use (PEP 562): torch only when a function is asked for."""
    if name not in _HOME_OF:
        raise AttributeError(f"module 'rlhf_dist.algo' has no attribute {name!r}")
    value = getattr(import_module(f"rlhf_dist.algo.{_HOME_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME_OF})
