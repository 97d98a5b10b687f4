"""Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-like Training"): GRPO without its two biases."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.algo.registry import ADVANTAGES, AdvantageInputs

if TYPE_CHECKING:
    from torch import Tensor


# The paper's other half, no per-response length normalisation, is the loss aggregation it defaults to.
@ADVANTAGES.register("dr_grpo", group=True, loss_aggregation="seq_mean_token_sum_norm")
def dr_grpo_advantage(x: AdvantageInputs) -> tuple[Tensor, Tensor]:
    """A_i = R_i - mean_G R: GRPO without the division by the group std (a question-difficulty bias)."""
    from rlhf_dist.algo.advantages import broadcast_sequence_advantages, dr_grpo_advantages

    adv = broadcast_sequence_advantages(dr_grpo_advantages(x.sequence_rewards, x.group_size), x.mask)
    return adv, adv
