"""IPO (Azar et al. 2023): a squared loss that keeps the log-ratio gap finite."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlhf_dist.algo.dpo_registry import DPO_LOSSES, DPOLossInputs

if TYPE_CHECKING:
    from torch import Tensor


@DPO_LOSSES.register("ipo")
def ipo_loss(x: DPOLossInputs) -> tuple[Tensor, Tensor, Tensor]:
    """IPO: (h - (t' - 1/2) / beta)^2 with h the gap of the per-token mean log-ratios (log pi - log pi_ref
    summed over the response, divided by its token count; TRL's normalisation, confirmed by the IPO authors),
    beta IPO's tau, t' the target after dpo.label_smoothing: t' = 1 gives (h - 1/(2 beta))^2, a tie pulls h to 0.

    This is the paper's Eq. 17 with the indicator I(y_w > y_l) replaced by the target probability (its
    population loss, Eq. 15, has P(y > y') there).
    """
    from rlhf_dist.algo.dpo import log_ratios, smoothed_target

    chosen, rejected = log_ratios(x)
    h = chosen / x.chosen_lengths.clamp_min(1) - rejected / x.rejected_lengths.clamp_min(1)
    t = smoothed_target(x.target, x.label_smoothing)
    losses = (h - (t - 0.5) / x.beta) ** 2
    return losses, x.beta * chosen, x.beta * rejected
