"""Reward post-processing: clipping and running normalisation statistics."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def clip_rewards(scores: Tensor, clip: float | None) -> Tensor:
    """Clip scores symmetrically to ``[-clip, clip]``.

    Args:
        scores: any shape, typically ``[B]``.
        clip: positive bound, or ``None`` to return ``scores`` unchanged.

    Returns:
        same shape as ``scores``.
    """
    if clip is None:
        return scores
    if clip <= 0:
        raise ValueError(f"clip must be positive, got {clip}")
    return scores.clamp(-clip, clip)


class RunningMeanStd:
    """Running mean / variance of a stream of scalars.

    Batches are merged with the parallel-variance formula of Chan et al.
    (a batched form of Welford's algorithm), in Python floats (double
    precision) so long runs do not drift and the state serialises as JSON.
    ``var`` is the population variance (divide by ``count``).
    """

    def __init__(self) -> None:
        self.mean: float = 0.0
        self.m2: float = 0.0  # sum of squared deviations from the mean
        self.count: int = 0

    @property
    def var(self) -> float:
        """Population variance; 0 before any data has been seen."""
        return self.m2 / self.count if self.count > 0 else 0.0

    @property
    def std(self) -> float:
        """Square root of :attr:`var`."""
        return math.sqrt(self.var)

    def update(self, x: Tensor) -> None:
        """Fold every element of ``x`` (any shape) into the statistics."""
        flat = x.detach().reshape(-1).to(torch.float64)
        n = flat.numel()
        if n == 0:
            return
        batch_mean = flat.mean().item()
        batch_m2 = (flat - batch_mean).square().sum().item()
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        # Cross term accounts for the two partial means being different.
        self.m2 += batch_m2 + delta * delta * self.count * n / total
        self.count = total

    def normalize(self, x: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
        """Scale ``x`` (any shape) by the running std, optionally centring it.

        Returns:
            ``(x - mean) / sqrt(var + eps)`` (or without ``- mean``), same shape.
        """
        scale = 1.0 / math.sqrt(self.var + eps)
        if shift_mean:
            return (x - self.mean) * scale
        return x * scale

    def state_dict(self) -> dict[str, Any]:
        """Plain floats/ints, so the state can be written as JSON."""
        return {"mean": self.mean, "m2": self.m2, "count": self.count}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` output."""
        self.mean = float(d["mean"])
        self.m2 = float(d["m2"])
        self.count = int(d["count"])
