"""SimPO (Meng et al. 2024): reference-free, length-normalised, with a target margin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.algo.dpo_registry import DPO_LOSSES, DPOLossInputs

if TYPE_CHECKING:
    from torch import Tensor


@DPO_LOSSES.register("simpo", reference_free=True)
def simpo_loss(x: DPOLossInputs) -> tuple[Tensor, Tensor, Tensor]:
    """SimPO: -(t' log sigmoid(z - gamma) + (1 - t') log sigmoid(-z - gamma)), z = beta * (mean log pi per
    token of chosen - of rejected), gamma = dpo.simpo_gamma; no reference model.

    t' = 1 is the paper's -log sigmoid(z - gamma) (TRL's CPO 'simpo'). The margin is mirrored for the other
    side, so a tie pulls z to 0 rather than to gamma; with label smoothing this differs from TRL's CPO, which
    keeps -eps log sigmoid(-(z - gamma)).
    """
    from rlhf_dist.algo.dpo import binary_cross_entropy_on_logits, smoothed_target

    chosen = x.beta * x.chosen_logps / x.chosen_lengths.clamp_min(1)
    rejected = x.beta * x.rejected_logps / x.rejected_lengths.clamp_min(1)
    z = chosen - rejected
    losses = binary_cross_entropy_on_logits(z - x.gamma, -z - x.gamma, smoothed_target(x.target, x.label_smoothing))
    return losses, chosen, rejected
