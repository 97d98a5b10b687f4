"""Losses: Bradley-Terry reward-model loss, PPO policy and value losses, and
log-prob / entropy helpers on logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhf_dist.algo.masked import masked_mean, masked_var

# Bound on |log pi_new - log pi_old|: exp(20) ~ 5e8 is already far outside any
# clip range, while exp(89) overflows float32 to inf and poisons the gradients.
_MAX_LOG_RATIO = 20.0


def bradley_terry_loss(
    chosen: Tensor,
    rejected: Tensor,
    target: Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """Bradley-Terry negative log-likelihood of pairwise preferences.

    Args:
        chosen: ``[B]`` rewards of the preferred responses.
        rejected: ``[B]`` rewards of the other responses.
        target: ``[B]`` probability that ``chosen`` is preferred; default 1,
            0.5 encodes a tie.
        weights: ``[B]`` non-negative per-pair weights; default 1.

    Returns:
        scalar ``sum(w * l) / sum(w)`` with
        ``l = -(t * logsigmoid(d) + (1 - t) * logsigmoid(-d))``, ``d = chosen - rejected``.
    """
    d = chosen - rejected
    # logsigmoid is the stable form of log(sigmoid(d)) for large |d|.
    per_pair = -F.logsigmoid(d)
    if target is not None:
        t = target.to(d.dtype)
        per_pair = -(t * F.logsigmoid(d) + (1.0 - t) * F.logsigmoid(-d))
    if weights is None:
        return per_pair.mean()
    w = weights.to(d.dtype)
    # All-zero weights give 0 rather than 0/0.
    return (w * per_pair).sum() / w.sum().clamp_min(torch.finfo(d.dtype).tiny)


def _masked_max(x: Tensor, valid: Tensor) -> Tensor:
    """Max over valid entries of ``x``; 0 if there are none."""
    if not bool(valid.any()):
        return torch.zeros((), dtype=x.dtype, device=x.device)
    return x[valid].max()


def ppo_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float,
    dual_clip: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate loss (Schulman et al. 2017), optional dual clip
    (Ye et al. 2020).

    Args:
        logprobs: ``[B, T]`` log-probs under the current policy (with grad).
        old_logprobs: ``[B, T]`` log-probs under the behaviour policy.
        advantages: ``[B, T]`` advantages.
        mask: ``[B, T]`` valid tokens; padding never affects loss or gradient.
        clip_eps: epsilon of the ratio clip ``[1 - eps, 1 + eps]``.
        dual_clip: constant c > 1; for A < 0 the objective is floored at c * A.

    Returns:
        ``(loss, stats)``: loss is ``-masked_mean(objective)`` (token mean).
        stats are detached scalars: ``clipfrac`` (valid tokens where the
        clipped branch is strictly smaller, i.e. its gradient is cut),
        ``dual_clipfrac``, ``approx_kl`` (masked mean of the k3 estimate of
        KL(pi_old || pi) = ratio - 1 - log ratio), ``ratio_mean``, ``ratio_max``.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    valid = mask.bool()
    # Zero padding before exp(): garbage there must not become inf (whose
    # backward through where() would be 0 * inf = NaN).
    log_ratio = torch.where(valid, logprobs - old_logprobs, torch.zeros_like(logprobs))
    log_ratio = log_ratio.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    adv = torch.where(valid, advantages, torch.zeros_like(advantages)).to(log_ratio.dtype)
    ratio = log_ratio.exp()

    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv
    objective = torch.minimum(unclipped, clipped)
    dual_active = torch.zeros_like(valid)
    if dual_clip is not None:
        floor = dual_clip * adv
        dual_active = (adv < 0) & (objective < floor) & valid
        objective = torch.where(dual_active, floor, objective)
    loss = -masked_mean(objective, valid)

    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped < unclipped).to(ratio.dtype), valid),
            "dual_clipfrac": masked_mean(dual_active.to(ratio.dtype), valid),
            "approx_kl": masked_mean(ratio - 1.0 - log_ratio, valid),
            "ratio_mean": masked_mean(ratio, valid),
            "ratio_max": _masked_max(ratio, valid),
        }
    return loss, {k: v.detach() for k, v in stats.items()}


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_eps: float | None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value-function loss as in PPO implementations.

    Args:
        values: ``[B, T]`` current critic values (with grad).
        old_values: ``[B, T]`` critic values at rollout time.
        returns: ``[B, T]`` regression targets.
        mask: ``[B, T]`` valid tokens.
        clip_eps: clip for ``values - old_values``; ``None`` = plain MSE.

    Returns:
        ``(loss, stats)`` with loss ``0.5 * masked_mean(max(l_unclipped, l_clipped))``.
        stats (detached scalars): ``value_clipfrac`` (valid tokens where the
        clipped error is the larger one) and ``explained_variance``
        (``1 - Var[R - V] / Var[R]`` over valid tokens, 0 if ``Var[R] == 0``).
    """
    valid = mask.bool()
    # Same reason as in ppo_policy_loss: keep padding out of the graph.
    v = torch.where(valid, values, torch.zeros_like(values))
    ret = torch.where(valid, returns, torch.zeros_like(returns)).to(v.dtype)
    err_unclipped = (v - ret).square()
    if clip_eps is None:
        per_token = err_unclipped
        clip_active = torch.zeros_like(valid)
    else:
        old_v = torch.where(valid, old_values, torch.zeros_like(old_values)).to(v.dtype)
        v_clipped = old_v + (v - old_v).clamp(-clip_eps, clip_eps)
        err_clipped = (v_clipped - ret).square()
        per_token = torch.maximum(err_unclipped, err_clipped)
        clip_active = (err_clipped > err_unclipped) & valid
    loss = 0.5 * masked_mean(per_token, valid)

    with torch.no_grad():
        var_ret = masked_var(ret, valid)
        var_res = masked_var(ret - v, valid)
        explained = torch.where(
            var_ret > 0, 1.0 - var_res / var_ret.clamp_min(1e-12), torch.zeros_like(var_ret)
        )
        stats = {
            "value_clipfrac": masked_mean(clip_active.to(v.dtype), valid),
            "explained_variance": explained,
        }
    return loss, {k: t.detach() for k, t in stats.items()}


def _upcast(logits: Tensor) -> Tensor:
    """Half-precision softmax loses too many bits; compute in float32."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        return logits.float()
    return logits


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical distribution defined by ``logits``.

    Args:
        logits: ``[B, T, V]`` (any leading shape); ``-inf`` entries allowed.

    Returns:
        ``[B, T]`` entropy in nats (float32 for half-precision inputs).
    """
    logp = F.log_softmax(_upcast(logits), dim=-1)
    # Clamping -inf log-probs to a finite value keeps p * log p = 0 * finite
    # (not 0 * -inf = NaN) in both the forward and the backward pass.
    finite_logp = logp.clamp_min(torch.finfo(logp.dtype).min)
    return -(logp.exp() * finite_logp).sum(dim=-1)


def logprobs_from_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """Log-probability of ``labels`` under ``logits``.

    Args:
        logits: ``[B, T, V]``.
        labels: ``[B, T]`` token ids.

    Returns:
        ``[B, T]`` ``log_softmax(logits)[..., labels]`` (float32 for half inputs).
    """
    index = labels.long().unsqueeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        # log p(y) = z_y - logsumexp(z): avoids a full [B, T, V] log_softmax.
        picked = logits.gather(-1, index).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    # Half precision: upcast one row at a time so only a [T, V] float32 copy
    # ever exists, instead of the whole [B, T, V] batch.
    rows = [
        F.log_softmax(row.float(), dim=-1).gather(-1, idx).squeeze(-1)
        for row, idx in zip(logits, index)
    ]
    return torch.stack(rows)
