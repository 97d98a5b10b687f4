"""REINFORCE leave-one-out (Ahmadian et al. 2024)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.algo.registry import ADVANTAGES, AdvantageInputs

if TYPE_CHECKING:
    from torch import Tensor


@ADVANTAGES.register("rloo", group=True)
def rloo_advantage(x: AdvantageInputs) -> tuple[Tensor, Tensor]:
    """A_i = R_i - mean of the other G-1 samples' R, on every token of sample i."""
    from rlhf_dist.algo.advantages import broadcast_sequence_advantages, rloo_advantages

    adv = broadcast_sequence_advantages(rloo_advantages(x.sequence_rewards, x.group_size), x.mask)
    return adv, adv
