"""The `dpo:` section: direct preference optimisation of the policy (`rlhf-dist dpo`, stages/dpo.py).

Data, tokenisation, ties and confidences come from the reward stage's options (data.pairs_path,
data.pairs_format, data.tie_policy, ...), the model from policy.*, the ranks from cluster.policy and the
checkpoints from checkpoint.* (every_steps counts optimizer updates here).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from rlhf_dist.algo.dpo_registry import DPO_LOSSES
from rlhf_dist.config.schema_parts import Strict, TrainConfig


class DPOStageConfig(Strict):
    loss: str = Field(
        "sigmoid", description="Preference loss on the summed response log-probs, each row's target t = P(chosen "
        "preferred) (1; 0.5 for a tie with data.tie_policy 'half'; an A/B row's soft vote p_a): "
        + DPO_LOSSES.describe() + ". Or a plugin: a function registered with @DPO_LOSSES.register "
        "(rlhf_dist.algo.dpo_registry), named 'module:function'.")
    beta: float = Field(
        0.1, gt=0.0, le=100.0, description="Strength of the implicit KL to the reference: the implicit reward is beta "
        "* log(pi / pi_ref) ('sigmoid', 'robust'); IPO's tau ('ipo'); the scale of the length-normalised log-probs "
        "('simpo', whose paper uses 2 to 2.5).")
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=0.5, description="Assumed fraction eps of flipped labels. 'sigmoid' and 'ipo': the target "
        "becomes t (1 - eps) + (1 - t) eps (conservative DPO); 'robust': the debiased loss of Chowdhury et al. 2024 "
        "(needs eps > 0); 'simpo': as 'sigmoid'.")
    simpo_gamma: float = Field(
        0.5, ge=0.0, le=100.0, description="'simpo' only: the target margin gamma between the chosen and rejected "
        "length-normalised rewards (the paper's gamma/beta ratio is 0.3 to 0.8).")
    epochs: int = Field(1, ge=1, le=1000, description="Passes over the preference pairs.")
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(lr=5e-7), description="Policy optimiser and engine for DPO (a "
        "global batch counts pairs; each pair is two sequences in one forward).")

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        return DPO_LOSSES.check(value)  # ValueError naming the registered ones
