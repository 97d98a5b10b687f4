"""GSPO (Zheng et al. 2025): PPO's clip on the whole sequence's ratio."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.algo.registry import POLICY_LOSSES, PolicyLossInputs

if TYPE_CHECKING:
    from torch import Tensor


@POLICY_LOSSES.register("gspo", loss_aggregation="seq_mean_token_mean")
def gspo_loss(x: PolicyLossInputs) -> tuple[Tensor, dict[str, Tensor]]:
    """the sequence ratio s_i = exp(mean over the response of (logp - old_logp)), clipped the same way (the
    paper's much smaller range: ppo.clip_eps_low 3e-4, ppo.clip_eps_high 4e-4).

    Written per token (the paper's GSPO-token form): ``log s_i = mean_t (logp - old_logp)`` over row i's
    valid tokens; each token carries ``sg[log s_i] + logp_t - sg[logp_t]``: its value is ``log s_i`` and
    its gradient ``grad logp_t``, so ``d s_it = s_i * grad logp_t``. With one advantage per sequence and
    ``seq_mean_token_mean`` this is exactly GSPO's gradient ``s_i * A_i * mean_t grad logp_t``.
    """
    import torch

    from rlhf_dist.algo.losses import clipped_surrogate, token_log_ratio
    from rlhf_dist.algo.masked import masked_mean

    valid = x.mask.bool()
    per_token = token_log_ratio(x)
    seq = masked_mean(per_token, valid, dim=1).unsqueeze(1)  # [B, 1]
    lp = torch.where(valid, x.logprobs, torch.zeros_like(x.logprobs))
    log_ratio = torch.where(valid, seq.detach() + lp - lp.detach(), torch.zeros_like(lp))
    return clipped_surrogate(x, log_ratio, per_token)
