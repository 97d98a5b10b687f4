"""PPO's clipped surrogate with the per-token ratio (Schulman et al. 2017)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.algo.registry import POLICY_LOSSES, PolicyLossInputs

if TYPE_CHECKING:
    from torch import Tensor


@POLICY_LOSSES.register("ppo")
def ppo_loss(x: PolicyLossInputs) -> tuple[Tensor, dict[str, Tensor]]:
    """the token ratio r_t = exp(logp_t - old_logp_t)."""
    from rlhf_dist.algo.losses import clipped_surrogate, token_log_ratio

    log_ratio = token_log_ratio(x)
    return clipped_surrogate(x, log_ratio, log_ratio)
