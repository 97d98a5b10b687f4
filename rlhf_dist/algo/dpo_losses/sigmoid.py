"""DPO (Rafailov et al. 2023), with label smoothing (cDPO) and soft targets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.algo.dpo_registry import DPO_LOSSES, DPOLossInputs

if TYPE_CHECKING:
    from torch import Tensor


@DPO_LOSSES.register("sigmoid")
def sigmoid_loss(x: DPOLossInputs) -> tuple[Tensor, Tensor, Tensor]:
    """DPO: -(t' log sigmoid(h) + (1 - t') log sigmoid(-h)), h = beta * (log-ratio of chosen - log-ratio of
    rejected), log-ratio = log pi - log pi_ref summed over the response, t' the target after
    dpo.label_smoothing (cDPO; t' = 1 the original DPO).

    With t = 1 and eps = 0 this is -log sigmoid(h) (TRL's 'sigmoid'); with eps > 0 it is TRL's
    `label_smoothing` form of it (conservative DPO).
    """
    from rlhf_dist.algo.dpo import binary_cross_entropy_on_logits, log_ratios, smoothed_target

    chosen, rejected = log_ratios(x)
    h = x.beta * (chosen - rejected)
    losses = binary_cross_entropy_on_logits(h, -h, smoothed_target(x.target, x.label_smoothing))
    return losses, x.beta * chosen, x.beta * rejected
