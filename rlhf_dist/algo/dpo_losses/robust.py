"""Robust DPO (Chowdhury et al. 2024): unbiased under a known label-flip rate."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.algo.dpo_registry import DPO_LOSSES, DPOLossInputs

if TYPE_CHECKING:
    from torch import Tensor


@DPO_LOSSES.register("robust")
def robust_loss(x: DPOLossInputs) -> tuple[Tensor, Tensor, Tensor]:
    """robust DPO: ((t - eps) l(h) + (1 - t - eps) l(-h)) / (1 - 2 eps), l(z) = -log sigmoid(z), h as in
    'sigmoid', eps = dpo.label_smoothing the assumed flip rate (0 < eps < 0.5).

    With t = 1 it is the paper's ((1 - eps) l(h) - eps l(-h)) / (1 - 2 eps) (TRL's 'robust'); for any t
    it is t * that + (1 - t) * the same with the pair swapped, so a tie (t = 0.5) gives DPO's tie loss.
    """
    from rlhf_dist.algo.dpo import binary_cross_entropy_on_logits, log_ratios

    chosen, rejected = log_ratios(x)
    h = x.beta * (chosen - rejected)
    eps = x.label_smoothing
    # (t - eps) l(h) + (1 - t - eps) l(-h) is the cross-entropy form with "target" t - eps and weight
    # 1 - 2 eps on the total; dividing by 1 - 2 eps undoes the bias flipped labels add in expectation.
    losses = binary_cross_entropy_on_logits(h, -h, (x.target - eps) / (1.0 - 2.0 * eps))
    return losses, x.beta * chosen, x.beta * rejected
