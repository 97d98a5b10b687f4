"""k2 of J. Schulman, "Approximating KL Divergence" (2020)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.algo.registry import KL_ESTIMATORS

if TYPE_CHECKING:
    from torch import Tensor


@KL_ESTIMATORS.register("k2")
def k2(log_ratio: Tensor) -> Tensor:
    """0.5 * log_ratio**2 (biased, low variance, >= 0)."""
    return 0.5 * log_ratio.square()
