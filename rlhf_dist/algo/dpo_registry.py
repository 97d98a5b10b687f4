"""The registry of direct preference losses (`dpo.loss`): DPO's sigmoid, IPO, SimPO, robust DPO.

The same pattern as algo/registry.py (one file per built-in in algo/dpo_losses/, registered with its
properties by a decorator, no torch at module level so the schema can read the names); it lives in its
own module because the PPO registries' inputs are per-token tensors and these are per-sequence ones::

    @DPO_LOSSES.register("my_loss", reference_free=True)
    def my_loss(x: DPOLossInputs) -> tuple[Tensor, Tensor, Tensor]:
        \"\"\"first paragraph: the option's description in docs/config-reference.md\"\"\"
        return losses, chosen_rewards, rejected_rewards  # each [B]

A plugin outside the package is named 'module:function' (`dpo.loss: my_pkg.losses:my_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlhf_dist.algo.registry import Entry, Registry

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class DPOLoss(Entry):
    """fn(DPOLossInputs) -> (per-row losses [B], chosen implicit rewards [B], rejected implicit rewards [B])."""

    reference_free: bool = False  # never reads the reference log-probs: the run computes none


@dataclass(frozen=True)
class DPOLossInputs:
    """One micro-batch of B preference pairs, per sequence (log-probs summed over the response tokens)."""

    chosen_logps: Tensor  # [B] log pi(chosen | prompt) under the policy (with grad)
    rejected_logps: Tensor  # [B] log pi(rejected | prompt)
    ref_chosen_logps: Tensor  # [B] the same under the reference (the starting policy); zeros if reference_free
    ref_rejected_logps: Tensor  # [B]
    chosen_lengths: Tensor  # [B] response tokens of chosen (eos included), >= 1
    rejected_lengths: Tensor  # [B]
    target: Tensor  # [B] P(chosen preferred): 1 a hard label, 0.5 a tie (data.tie_policy half), else a soft vote
    beta: float  # dpo.beta
    label_smoothing: float  # dpo.label_smoothing: eps, the assumed rate of flipped labels
    gamma: float  # dpo.simpo_gamma: SimPO's target margin


DPO_LOSSES: Registry[DPOLoss] = Registry("DPO loss", "dpo.loss", "DPO_LOSSES", DPOLoss,
                                         home="rlhf_dist.algo.dpo_registry")
