"""k1 of J. Schulman, "Approximating KL Divergence" (2020)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.algo.registry import KL_ESTIMATORS

if TYPE_CHECKING:
    from torch import Tensor


@KL_ESTIMATORS.register("k1")
def k1(log_ratio: Tensor) -> Tensor:
    """log_ratio (unbiased, high variance, can be < 0)."""
    return log_ratio
