"""Advantage estimators: GAE (PPO), GRPO, Dr. GRPO, RLOO and REINFORCE++.

Token-level recursions run backwards over VALID tokens only: a masked position
is skipped (it neither receives nor passes anything), so left padding, right
padding and holes in the middle all behave the same. Masked outputs are 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf_dist.algo.masked import masked_whiten


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016).

    ``delta_t = r_t + gamma * V_next - V_t`` and
    ``A_t = delta_t + gamma * lam * A_next``, where "next" is the next VALID
    token of the row and ``V``/``A`` after the last valid token are 0.

    Args:
        rewards: ``[B, T]`` per-token rewards.
        values: ``[B, T]`` critic values of the same tokens.
        mask: ``[B, T]`` valid tokens, bool or 0/1.
        gamma: discount factor.
        lam: GAE lambda.

    Returns:
        ``(advantages [B, T], returns [B, T])`` with ``returns = A + V`` on
        valid positions; both are 0 on masked positions.
    """
    valid = mask.bool()
    zero = torch.zeros_like(rewards[:, 0])
    next_value, next_adv = zero, zero
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = delta + gamma * lam * next_adv
        ok = valid[:, t]
        # Masked steps leave the carried state untouched, i.e. they are skipped.
        next_adv = torch.where(ok, adv_t, next_adv)
        next_value = torch.where(ok, values[:, t], next_value)
        advantages[:, t] = torch.where(ok, adv_t, zero)
    returns = torch.where(valid, advantages + values, torch.zeros_like(values))
    return advantages, returns


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Reward-to-go ``G_t = r_t + gamma * G_next`` over valid tokens.

    Args:
        rewards: ``[B, T]`` per-token rewards.
        mask: ``[B, T]`` valid tokens, bool or 0/1.
        gamma: discount factor.

    Returns:
        ``[B, T]`` returns, 0 on masked positions.
    """
    valid = mask.bool()
    zero = torch.zeros_like(rewards[:, 0])
    running = zero
    out = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        ok = valid[:, t]
        running = torch.where(ok, rewards[:, t] + gamma * running, running)
        out[:, t] = torch.where(ok, running, zero)
    return out


def _grouped(scores: Tensor, group_size: int) -> Tensor:
    """Reshape ``[B]`` scores into ``[B // G, G]`` after validating the shape."""
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D [B], got shape {tuple(scores.shape)}")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2, got {group_size}")
    if scores.shape[0] % group_size != 0:
        raise ValueError(
            f"batch size {scores.shape[0]} is not a multiple of group_size {group_size}"
        )
    return scores.view(-1, group_size)


def grpo_advantages(
    scores: Tensor, group_size: int, eps: float = 1e-6, scale_by_std: bool = True
) -> Tensor:
    """Group-relative advantages (GRPO, Shao et al. 2024).

    Rows ``k*G .. k*G + G - 1`` are the G samples of prompt ``k``.

    Args:
        scores: ``[B]`` sequence scores, ``B % group_size == 0``.
        group_size: samples per prompt G (>= 2).
        eps: added to the std so identical scores give 0, not NaN.
        scale_by_std: divide by the group's unbiased std (False = Dr. GRPO
            style, only centring).

    Returns:
        ``[B]`` advantages ``(score - group mean) / (group std + eps)``.
    """
    groups = _grouped(scores, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale_by_std:
        centred = centred / (groups.std(dim=1, unbiased=True, keepdim=True) + eps)
    return centred.reshape(-1)


def dr_grpo_advantages(scores: Tensor, group_size: int) -> Tensor:
    """Dr. GRPO advantages (Liu et al. 2025, "Understanding R1-Zero-like Training").

    ``A_i = score_i - mean_j score_j`` over the G samples of the prompt: GRPO
    without the division by the group std, which up-weights prompts that are
    almost always solved or failed (a question-difficulty bias). The paper's
    other half, no per-response length normalisation, lives in the loss
    (``aggregate_loss(..., "seq_mean_token_sum_norm")``).

    Args:
        scores: ``[B]`` sequence scores, grouped contiguously as in GRPO.
        group_size: samples per prompt G (>= 2).

    Returns:
        ``[B]`` centred scores.
    """
    return grpo_advantages(scores, group_size, scale_by_std=False)


def rloo_advantages(scores: Tensor, group_size: int) -> Tensor:
    """REINFORCE leave-one-out baseline (Ahmadian et al. 2024).

    Args:
        scores: ``[B]`` sequence scores, grouped contiguously as in GRPO.
        group_size: samples per prompt G (>= 2).

    Returns:
        ``[B]`` advantages: each score minus the mean of the other G-1 scores.
    """
    groups = _grouped(scores, group_size)
    others_mean = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others_mean).reshape(-1)


def reinforce_pp_advantages(
    token_rewards: Tensor, mask: Tensor, gamma: float = 1.0
) -> Tensor:
    """REINFORCE++ advantages (Hu 2025): whitened discounted return-to-go.

    Args:
        token_rewards: ``[B, T]`` per-token rewards that already include the
            KL penalty (e.g. from :func:`kl_penalized_rewards`).
        mask: ``[B, T]`` valid tokens.
        gamma: discount factor.

    Returns:
        ``[B, T]`` advantages, whitened over all valid tokens of the batch
        (global normalisation replaces a critic); 0 on masked positions.
    """
    returns = discounted_returns(token_rewards, mask, gamma)
    return masked_whiten(returns, mask)


def broadcast_sequence_advantages(adv: Tensor, mask: Tensor) -> Tensor:
    """Put a per-sequence advantage on every valid token of its row.

    Args:
        adv: ``[B]`` sequence advantages.
        mask: ``[B, T]`` valid tokens.

    Returns:
        ``[B, T]`` with ``adv[b]`` on valid positions and 0 elsewhere.
    """
    expanded = adv.unsqueeze(-1).expand(mask.shape)
    return torch.where(mask.bool(), expanded, torch.zeros_like(expanded))
