"""Reductions over the valid entries of a tensor.

A mask is a bool or 0/1 tensor broadcastable to ``x``; a nonzero entry marks a
valid element. Every function here returns 0 (never NaN) where no entry is
valid, because padding-only rows are normal in RLHF batches.
"""

from __future__ import annotations

import torch
from torch import Tensor

DimArg = int | tuple[int, ...] | None


def _valid(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(x with invalid entries zeroed, bool mask expanded to x)``."""
    valid = mask.bool().expand_as(x)
    # torch.where (not x * mask) so that inf/NaN in padding cannot leak into
    # the result: inf * 0 is NaN, but where() never reads the dropped branch.
    return torch.where(valid, x, torch.zeros_like(x)), valid


def masked_sum(x: Tensor, mask: Tensor, dim: DimArg = None) -> Tensor:
    """Sum of the valid entries of ``x``.

    Args:
        x: any shape, e.g. ``[B, T]``.
        mask: same shape as ``x`` (or broadcastable), bool or 0/1.
        dim: dimension(s) to reduce; ``None`` reduces everything to a scalar.

    Returns:
        ``x`` reduced over ``dim``; 0 where nothing is valid.
    """
    xz, _ = _valid(x, mask)
    return xz.sum() if dim is None else xz.sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: DimArg = None) -> Tensor:
    """Mean of the valid entries of ``x``.

    Args:
        x: any shape, e.g. ``[B, T]``.
        mask: same shape as ``x`` (or broadcastable), bool or 0/1.
        dim: dimension(s) to reduce; ``None`` gives a scalar.

    Returns:
        the mean over ``dim``; 0 (not NaN) for a slice with no valid entry.
    """
    xz, valid = _valid(x, mask)
    if dim is None:
        total, count = xz.sum(), valid.sum()
    else:
        total, count = xz.sum(dim=dim), valid.sum(dim=dim)
    # The sum of an all-masked slice is exactly 0, so clamping the count to 1
    # yields 0 there instead of 0/0.
    return total / count.clamp_min(1).to(xz.dtype)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of all valid entries of ``x`` (a scalar).

    Args:
        x: any shape, e.g. ``[B, T]``.
        mask: same shape as ``x`` (or broadcastable), bool or 0/1.
        unbiased: divide by ``n - 1`` (Bessel) instead of ``n``.

    Returns:
        scalar tensor; 0 when there are too few valid entries
        (``n == 0``, or ``n == 1`` with ``unbiased``).
    """
    mean = masked_mean(x, mask)
    sq_dev = (x - mean) ** 2
    total = masked_sum(sq_dev, mask)
    n = mask.bool().expand_as(x).sum()
    denom = n - 1 if unbiased else n
    # total is 0 whenever denom <= 0, so the clamp turns 0/0 into 0.
    return total / denom.clamp_min(1).to(total.dtype)


def masked_whiten(
    x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> Tensor:
    """Normalise the valid entries of ``x`` to mean 0 / std 1 over the batch.

    Statistics are taken over all valid entries at once (not per row), with the
    unbiased variance.

    Args:
        x: any shape, e.g. ``[B, T]``.
        mask: same shape as ``x`` (or broadcastable), bool or 0/1.
        shift_mean: if False only rescale, keeping the original mean.
        eps: added to the variance before the square root.

    Returns:
        same shape as ``x``; masked entries are 0.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=True)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    out, _ = _valid(out, mask)
    return out
