"""Reward post-processing: clipping, running normalisation statistics, and DAPO's overlong length penalty."""

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


def overlong_penalty(lengths: Tensor, max_tokens: int, buffer_tokens: int) -> Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, eq. 13), before its weight (penalty factor).

    With ``L_max = max_tokens`` (the response cap) and ``L_cache = buffer_tokens``::

        0                                 if |y| <= L_max - L_cache
        (L_max - L_cache - |y|) / L_cache if L_max - L_cache < |y| <= L_max
        -1                                if |y| > L_max

    i.e. ``clamp((L_max - L_cache - |y|) / L_cache, -1, 0)``: a penalty that grows linearly over the last
    ``L_cache`` tokens before the cap and is -1 at the cap itself (a response cut off at ``L_max``).

    Args:
        lengths: ``[B]`` response lengths in tokens (the generated tokens, eos included).
        max_tokens: L_max >= 1.
        buffer_tokens: L_cache, 1 <= L_cache <= L_max.

    Returns:
        ``[B]`` float penalties in ``[-1, 0]``.
    """
    if not 1 <= buffer_tokens <= max_tokens:
        raise ValueError(f"buffer_tokens must be in [1, max_tokens={max_tokens}], got {buffer_tokens}")
    over = (max_tokens - buffer_tokens - lengths.to(torch.float64)) / buffer_tokens
    return over.clamp(-1.0, 0.0).to(torch.float32)


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
