"""Dynamic sampling (DAPO, Yu et al. 2025): keep only the prompt groups that teach something.

With a group-relative estimator (GRPO, Dr. GRPO, RLOO) a group whose G samples all
score the same gets advantage 0 on every token: it adds no gradient and only
shrinks the effective batch. DAPO over-samples prompts and keeps the groups with
non-zero score variance until the batch is full; the functions here are that filter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf_dist.algo.advantages import _grouped


def keep_informative_groups(scores: Tensor, group_size: int, atol: float = 0.0) -> Tensor:
    """Indices of the groups whose scores are not all equal.

    Rows ``k*G .. k*G + G - 1`` are the G samples of prompt ``k`` (as in GRPO).
    A group is kept when ``max - min > atol`` over its scores, i.e. its variance
    is non-zero (the spread, not ``std > 0``: the mean of G equal floats can
    round, which would give a tiny non-zero std for an uninformative group).

    Args:
        scores: ``[B]`` sequence scores, ``B % group_size == 0``.
        group_size: samples per prompt G (>= 2).
        atol: spreads up to this count as "all equal".

    Returns:
        ``[K]`` long tensor of kept group indices ``k``, ascending.
    """
    groups = _grouped(scores, group_size)
    spread = groups.max(dim=1).values - groups.min(dim=1).values
    return torch.nonzero(spread > atol).flatten()


def group_sample_indices(groups: Tensor, group_size: int) -> Tensor:
    """Row indices of the samples of ``groups``: ``[K]`` -> ``[K * G]``.

    Group ``k`` becomes rows ``k*G .. k*G + G - 1``, groups in the given order,
    so ``batch.select(group_sample_indices(keep, G))`` keeps whole groups adjacent.
    """
    offsets = torch.arange(group_size, device=groups.device)
    return (groups.long().unsqueeze(1) * group_size + offsets).flatten()
