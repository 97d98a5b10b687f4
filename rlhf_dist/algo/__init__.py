"""Pure tensor math for RLHF: masking, KL, rewards, advantages, losses, sampling filters, metrics.

Nothing here does I/O or touches Ray/DeepSpeed; every function maps tensors
to tensors (or Python floats for metrics).
"""

from rlhf_dist.algo.advantages import (
    broadcast_sequence_advantages,
    discounted_returns,
    dr_grpo_advantages,
    gae,
    grpo_advantages,
    reinforce_pp_advantages,
    rloo_advantages,
)
from rlhf_dist.algo.kl import (
    AdaptiveKLController,
    FixedKLController,
    KLController,
    build_kl_controller,
    kl_estimate,
    kl_penalized_rewards,
    last_valid_index,
)
from rlhf_dist.algo.losses import (
    aggregate_loss,
    bradley_terry_loss,
    entropy_from_logits,
    logprobs_from_logits,
    ppo_policy_loss,
    resolve_loss_aggregation,
    truncated_is_weights,
    value_loss,
)
from rlhf_dist.algo.masked import masked_mean, masked_sum, masked_var, masked_whiten
from rlhf_dist.algo.metrics import (
    calibration,
    kendall_tau,
    mean_kendall_tau,
    pairwise_accuracy,
    reward_margin_stats,
)
from rlhf_dist.algo.rewards import RunningMeanStd, clip_rewards
from rlhf_dist.algo.sampling import group_sample_indices, keep_informative_groups

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "KLController",
    "RunningMeanStd",
    "aggregate_loss",
    "bradley_terry_loss",
    "broadcast_sequence_advantages",
    "build_kl_controller",
    "calibration",
    "clip_rewards",
    "discounted_returns",
    "dr_grpo_advantages",
    "entropy_from_logits",
    "gae",
    "group_sample_indices",
    "grpo_advantages",
    "keep_informative_groups",
    "kendall_tau",
    "kl_estimate",
    "kl_penalized_rewards",
    "last_valid_index",
    "logprobs_from_logits",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "mean_kendall_tau",
    "pairwise_accuracy",
    "ppo_policy_loss",
    "reinforce_pp_advantages",
    "resolve_loss_aggregation",
    "reward_margin_stats",
    "rloo_advantages",
    "truncated_is_weights",
    "value_loss",
]
