"""Direct preference losses on per-sequence log-probs (DPO and its relatives), pure tensor math.

    losses, chosen_rewards, rejected_rewards = preference_losses("sigmoid", x)   # x: DPOLossInputs, each [B]
    loss, stats = reduce_dpo(losses, chosen_rewards, rejected_rewards, x.target, weight)

Every loss reads a per-row target t = P(chosen preferred) instead of a hard label: t = 1 is the
classic loss, t = 0.5 a tie (data.tie_policy 'half'), anything else a soft vote (feedback.aggregate
'soft'). Label smoothing eps (cDPO, Mitchell 2023) moves it to t' = t (1 - eps) + (1 - t) eps. The
implicit reward of a response is beta * (log pi - log pi_ref) (beta * the length-normalised log pi for
SimPO); `margin` is chosen minus rejected and `accuracy` the tie-aware agreement of the two rewards'
order with t (algo/metrics.py pairwise_accuracy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhf_dist.algo.dpo_registry import DPO_LOSSES, DPOLossInputs
from rlhf_dist.algo.metrics import pairwise_accuracy


def smoothed_target(target: Tensor, label_smoothing: float) -> Tensor:
    """t' = t (1 - eps) + (1 - t) eps: the target once a fraction eps of labels is assumed flipped."""
    return target * (1.0 - 2.0 * label_smoothing) + label_smoothing


def binary_cross_entropy_on_logits(z_chosen: Tensor, z_rejected: Tensor, target: Tensor) -> Tensor:
    """-(t log sigmoid(z_chosen) + (1 - t) log sigmoid(z_rejected)) per row: the cross-entropy of the model's
    P(chosen wins) = sigmoid(z_chosen) (and P(rejected wins) = sigmoid(z_rejected)) against target t.
    logsigmoid: stable for large |z|."""
    return -(target * F.logsigmoid(z_chosen) + (1.0 - target) * F.logsigmoid(z_rejected))


def log_ratios(x: DPOLossInputs) -> tuple[Tensor, Tensor]:
    """(log pi/pi_ref of chosen, of rejected), each [B]."""
    return x.chosen_logps - x.ref_chosen_logps, x.rejected_logps - x.ref_rejected_logps


def preference_losses(name: str, x: DPOLossInputs) -> tuple[Tensor, Tensor, Tensor]:
    """The registered loss `name` (algo/dpo_losses/): (per-row losses, chosen rewards, rejected rewards), [B] each;
    the rewards are detached."""
    losses, chosen, rejected = DPO_LOSSES.get(name).fn(x)
    return losses, chosen.detach(), rejected.detach()


def reduce_dpo(losses: Tensor, chosen_rewards: Tensor, rejected_rewards: Tensor, target: Tensor,
               weight: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """The micro-batch loss sum(w * l) / sum(w) (w = 1 unless data.confidence_as_weight) and its stats:
    loss, rewards/chosen, rewards/rejected, margin (their means) and accuracy (tie-aware, see module doc)."""
    if weight is None:
        loss = losses.mean()
    else:
        w = weight.to(losses.dtype)
        loss = (w * losses).sum() / w.sum().clamp_min(torch.finfo(losses.dtype).tiny)  # all-zero weights: 0
    stats = {
        "loss": float(loss.detach()),
        "rewards/chosen": float(chosen_rewards.mean()),
        "rewards/rejected": float(rejected_rewards.mean()),
        "margin": float((chosen_rewards - rejected_rewards).mean()),
        "accuracy": pairwise_accuracy(chosen_rewards, rejected_rewards, target),
    }
    return loss, stats
