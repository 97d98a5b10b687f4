"""GRPO group-relative advantages (Shao et al. 2024)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.algo.registry import ADVANTAGES, AdvantageInputs

if TYPE_CHECKING:
    from torch import Tensor


@ADVANTAGES.register("grpo", group=True)
def grpo_advantage(x: AdvantageInputs) -> tuple[Tensor, Tensor]:
    """A_i = (R_i - mean_G R) / (std_G R + 1e-6) on every token of sample i."""
    from rlhf_dist.algo.advantages import broadcast_sequence_advantages, grpo_advantages

    adv = broadcast_sequence_advantages(grpo_advantages(x.sequence_rewards, x.group_size), x.mask)
    return adv, adv
