"""Losses: Bradley-Terry reward-model loss, PPO (and GSPO) policy and value
losses, loss aggregation, truncated importance weights, and log-prob / entropy
helpers on logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhf_dist.algo.masked import masked_mean, masked_sum, masked_var
from rlhf_dist.algo.registry import ADVANTAGES, LOSS_AGGREGATIONS, POLICY_LOSSES, PolicyLossInputs

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


def aggregate_loss(per_token: Tensor, mask: Tensor, mode: str) -> Tensor:
    """Reduce a ``[B, R]`` per-token loss to a scalar.

    With ``m`` the mask, ``x`` the per-token values and ``R`` the number of
    response columns:

    - ``token_mean``: ``sum_{i,t} m*x / sum_{i,t} m``. Every valid token weighs
      the same, so long responses weigh more (classic PPO; today's default).
    - ``seq_mean_token_mean``: ``mean_i (sum_t m*x / sum_t m)`` over the rows
      with at least one valid token. Every sequence weighs the same (GSPO).
    - ``seq_mean_token_sum_norm``: ``sum_{i,t} m*x / (B * R)``: token sums
      divided by a constant, so there is no per-sequence length normalisation
      (Dr. GRPO, Liu et al. 2025). Rows without valid tokens still count in B.

    Args:
        per_token: ``[B, R]`` values.
        mask: ``[B, R]`` valid tokens, bool or 0/1.
        mode: one of :data:`LOSS_AGGREGATIONS`.

    Returns:
        a scalar; 0 (never NaN) when nothing is valid.
    """
    valid = mask.bool()
    if mode == "token_mean":
        return masked_mean(per_token, valid)
    if mode == "seq_mean_token_mean":
        has_tokens = valid.any(dim=1)
        return masked_mean(masked_mean(per_token, valid, dim=1), has_tokens)
    if mode == "seq_mean_token_sum_norm":
        return masked_sum(per_token, valid) / max(1, per_token.shape[0] * per_token.shape[1])
    raise ValueError(f"loss aggregation must be one of {LOSS_AGGREGATIONS}, got {mode!r}")


def resolve_loss_aggregation(aggregation: str | None, advantage: str, policy_loss: str) -> str:
    """The aggregation a config means: ``aggregation`` when set, else the one
    its papers use, as registered (algo/registry.py): the advantage
    estimator's (Dr. GRPO -> ``seq_mean_token_sum_norm``), else the policy
    loss's (GSPO -> ``seq_mean_token_mean``), else ``token_mean``."""
    if aggregation is not None:
        return aggregation
    return (ADVANTAGES.get(advantage).loss_aggregation or POLICY_LOSSES.get(policy_loss).loss_aggregation
            or "token_mean")


def token_log_ratio(x: PolicyLossInputs) -> Tensor:
    """``log pi - log pi_old`` per token, 0 on padding, clamped to +-20."""
    valid = x.mask.bool()
    # Zero padding before exp(): garbage there must not become inf (whose
    # backward through where() would be 0 * inf = NaN).
    log_ratio = torch.where(valid, x.logprobs - x.old_logprobs, torch.zeros_like(x.logprobs))
    return log_ratio.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)


def ppo_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float,
    dual_clip: float | None = None,
    variant: str = "ppo",
    aggregation: str = "token_mean",
    is_weights: Tensor | None = None,
    clip_eps_high: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The policy loss registered as ``variant`` (algo/policy_losses/): the
    PPO clipped surrogate loss (Schulman et al. 2017), asymmetric clip bounds
    (DAPO's clip-higher, Yu et al. 2025), optional dual clip (Ye et al. 2020),
    GSPO's sequence-level ratio (Zheng et al. 2025) and per-token importance
    weights.

    Per token: ``obj = w * min(r * A, clip(r, 1 - eps_low, 1 + eps_high) * A)`` (floored
    at ``c * A`` for ``A < 0`` with the dual clip), where ``r = exp(logp - old_logp)``
    for ``variant='ppo'`` and ``r = s_i = exp(mean_t (logp - old_logp))`` (the
    whole sequence's ratio, see algo/policy_losses/gspo.py) for ``'gspo'``;
    ``w`` are the detached ``is_weights`` (default 1). The loss is
    ``-aggregate_loss(obj, mask, aggregation)``.

    Args:
        logprobs: ``[B, T]`` log-probs under the current policy (with grad).
        old_logprobs: ``[B, T]`` log-probs the ratio is taken against.
        advantages: ``[B, T]`` advantages.
        mask: ``[B, T]`` valid tokens; padding never affects loss or gradient.
        clip_eps: eps_low, the ratio clip's low bound ``1 - eps_low``.
        dual_clip: constant c > 1; for A < 0 the objective is floored at c * A.
        variant: a registered policy loss: ``'ppo'`` (token ratio), ``'gspo'`` (sequence ratio).
        aggregation: see :func:`aggregate_loss`; ``'token_mean'`` is classic PPO.
        is_weights: ``[B, T]`` per-token weights, e.g. truncated importance
            weights (:func:`truncated_is_weights`); never differentiated.
        clip_eps_high: eps_high, the high bound ``1 + eps_high`` (>= clip_eps);
            ``None``: the symmetric clip, eps_high = clip_eps.

    Returns:
        ``(loss, stats)``. stats are detached scalars: ``clipfrac`` (valid
        tokens where the clipped branch is strictly smaller, i.e. its gradient
        is cut), ``dual_clipfrac``, ``approx_kl`` (masked mean of the k3
        estimate of KL(pi_old || pi) = ratio - 1 - log ratio, per token),
        ``ratio_mean``, ``ratio_max`` (of the ratio ``r`` used).
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    if clip_eps_high is not None and clip_eps_high < clip_eps:
        raise ValueError(f"clip_eps_high must be >= clip_eps (the low bound) {clip_eps}, got {clip_eps_high}")
    try:
        loss_fn = POLICY_LOSSES.get(variant).fn
    except ValueError as err:
        raise ValueError(f"policy loss variant: {err}") from None
    return loss_fn(PolicyLossInputs(logprobs, old_logprobs, advantages, mask, clip_eps, dual_clip, aggregation,
                                    is_weights, clip_eps_high))


def clipped_surrogate(x: PolicyLossInputs, log_ratio: Tensor, per_token_log_ratio: Tensor
                      ) -> tuple[Tensor, dict[str, Tensor]]:
    """The clipped objective of :func:`ppo_policy_loss` for a given ratio ``r = exp(log_ratio)`` [B, R]
    (0 on padding); ``per_token_log_ratio`` (:func:`token_log_ratio`) feeds the ``approx_kl`` statistic."""
    valid, dual_clip, is_weights = x.mask.bool(), x.dual_clip, x.is_weights
    adv = torch.where(valid, x.advantages, torch.zeros_like(x.advantages)).to(log_ratio.dtype)
    ratio = log_ratio.exp()

    unclipped = ratio * adv
    clipped = ratio.clamp(*x.clip_range) * adv  # [1 - eps_low, 1 + eps_high]
    objective = torch.minimum(unclipped, clipped)
    dual_active = torch.zeros_like(valid)
    if dual_clip is not None:
        floor = dual_clip * adv
        dual_active = (adv < 0) & (objective < floor) & valid
        objective = torch.where(dual_active, floor, objective)
    if is_weights is not None:
        w = torch.where(valid, is_weights.detach(), torch.zeros_like(is_weights)).to(objective.dtype)
        objective = objective * w
    loss = -aggregate_loss(objective, valid, x.aggregation)
    return loss, _policy_stats(ratio, per_token_log_ratio, clipped < unclipped, dual_active, valid)


@torch.no_grad()
def _policy_stats(ratio: Tensor, token_log_ratio: Tensor, clip_active: Tensor, dual_active: Tensor,
                  valid: Tensor) -> dict[str, Tensor]:
    """Detached scalar diagnostics of :func:`ppo_policy_loss`."""
    return {
        "clipfrac": masked_mean(clip_active.to(ratio.dtype), valid),
        "dual_clipfrac": masked_mean(dual_active.to(ratio.dtype), valid),
        "approx_kl": masked_mean(token_log_ratio.exp() - 1.0 - token_log_ratio, valid),
        "ratio_mean": masked_mean(ratio, valid),
        "ratio_max": _masked_max(ratio, valid),
    }


def truncated_is_weights(
    old_logprobs: Tensor, behaviour_logprobs: Tensor, mask: Tensor, cap: float | None, level: str = "token"
) -> tuple[Tensor, dict[str, Tensor]]:
    """Truncated importance sampling weights for off-policy samples
    (Espeholt et al. 2018; Yao et al. 2025 for LLM rollouts).

    Samples come from the behaviour policy mu (the rollout engine: stale
    weights, other kernels) while PPO's ratio is taken against pi_old (the
    trainer's recomputed log-probs). Each token's loss is re-weighted by
    ``w = min(rho, cap)``, detached; the cap bounds the variance that rare
    tokens (mu << pi_old) would bring. With ``d_t = old_logp_t - behaviour_logp_t``
    on row i's valid tokens, ``rho`` is, by ``level``:

    - ``token``: ``exp(d_t)``, each token its own ratio (biased, low variance);
    - ``sequence``: ``exp(sum_t d_t)`` = pi_old(y|x) / mu(y|x), the whole
      response's ratio on each of its tokens (unbiased, high variance);
    - ``geometric``: ``exp(mean_t d_t)``, its per-token geometric mean.

    The log ratio is clamped to +-20 before exp() (after the sum or mean).

    Args:
        old_logprobs: ``[B, R]`` log-probs of pi_old (recomputed by the trainer).
        behaviour_logprobs: ``[B, R]`` log-probs of the policy that sampled.
        mask: ``[B, R]`` valid tokens.
        cap: truncation C >= 1; ``None`` keeps the raw ratio.
        level: ``'token'``, ``'sequence'`` or ``'geometric'``.

    Returns:
        ``(weights [B, R], stats)``; weights are 0 on padding and carry no
        gradient. stats (detached scalars, over valid tokens, of the RAW ratio
        before the cap; a sequence's ratio counts once per token):
        ``is_weight_mean``, ``is_weight_max``, and ``is_clipped_frac`` (the
        fraction of tokens whose ratio exceeds the cap).
    """
    if level not in ("token", "sequence", "geometric"):
        raise ValueError(f"importance-weight level must be 'token', 'sequence' or 'geometric', got {level!r}")
    valid = mask.bool()
    with torch.no_grad():
        log_w = torch.where(valid, old_logprobs - behaviour_logprobs, torch.zeros_like(old_logprobs))
        if level != "token":  # one ratio per row, on each of its tokens
            per_row = masked_sum(log_w, valid, dim=1) if level == "sequence" else masked_mean(log_w, valid, dim=1)
            log_w = per_row.unsqueeze(1).expand_as(log_w)
        raw = log_w.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO).exp()
        weights = raw if cap is None else raw.clamp(max=cap)
        weights = torch.where(valid, weights, torch.zeros_like(weights))
        over = torch.zeros_like(valid) if cap is None else (raw > cap) & valid
        stats = {
            "is_weight_mean": masked_mean(raw, valid),
            "is_weight_max": _masked_max(raw, valid),
            "is_clipped_frac": masked_mean(over.to(raw.dtype), valid),
        }
    return weights, stats


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
