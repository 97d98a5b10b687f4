"""REINFORCE++ (Hu 2025): a global baseline instead of a critic."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.algo.registry import ADVANTAGES, AdvantageInputs

if TYPE_CHECKING:
    from torch import Tensor


@ADVANTAGES.register("reinforce_pp")
def reinforce_pp_advantage(x: AdvantageInputs) -> tuple[Tensor, Tensor]:
    """the discounted return-to-go (ppo.gamma) of the KL-penalised token rewards, whitened over all valid
    tokens of the batch; no critic."""
    from rlhf_dist.algo.advantages import reinforce_pp_advantages

    adv = reinforce_pp_advantages(x.token_rewards, x.mask, x.gamma)
    return adv, adv
