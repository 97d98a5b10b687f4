"""k3 of J. Schulman, "Approximating KL Divergence" (2020).

Computed on ``log_ratio`` clamped to ``[-K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP]`` (10): its
``exp(-log_ratio)`` term is 3.3e6 at log_ratio -15 and 4.9e8 at -20, so one token the reference finds far
likelier than the policy would swamp the whole batch's penalty (and the reward). With the clamp k3 is at
most exp(10) - 11 = 22015 per token. A |log ratio| of 10 is a 22026x probability ratio: beyond it the
estimate says nothing more. k1 (linear) and k2 (quadratic) stay unclamped, so they still report the
policy's raw drift.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.algo.registry import KL_ESTIMATORS

if TYPE_CHECKING:
    from torch import Tensor

K3_LOG_RATIO_CLAMP = 10.0  # see the module docstring


@KL_ESTIMATORS.register("k3")
def k3(log_ratio: Tensor) -> Tensor:
    """exp(-log_ratio) - 1 + log_ratio (unbiased, low variance, >= 0), log_ratio clamped to +-10."""
    # exp(-x) - 1 + x >= 0 for every x, so k3 never goes negative; the clamp bounds exp(-x)
    x = log_ratio.clamp(-K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP)
    return (-x).expm1() + x
