"""GAE with a critic (Schulman et al. 2016): classic PPO."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.algo.registry import ADVANTAGES, AdvantageInputs

if TYPE_CHECKING:
    from torch import Tensor


@ADVANTAGES.register("gae", needs_critic=True)
def gae_advantage(x: AdvantageInputs) -> tuple[Tensor, Tensor]:
    """GAE(ppo.gamma, ppo.lam) over the KL-penalised token rewards and the critic's values, whitened over
    the batch with ppo.whiten_advantages; the critic regresses on returns = A + V."""
    from rlhf_dist.algo.advantages import gae
    from rlhf_dist.algo.masked import masked_whiten

    advantages, returns = gae(x.token_rewards, x.values, x.mask, x.gamma, x.lam)
    if x.whiten:
        advantages = masked_whiten(advantages, x.mask)
    return advantages, returns
