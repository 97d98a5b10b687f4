"""Pipeline rounds that learn from preferences directly (pipeline.method dpo | online_dpo): no reward model, no PPO.

    dpo:         round 1: DPO on the configured preferences (data.pairs_path, any format the RM reads) or, with
                 pipeline.first_round_preferences policy_samples, on labelled samples of the starting policy;
                 round r > 1: two samples per prompt from the current policy, judged (feedback.source), then
                 DPO on all feedback so far, as the reward model of a PPO round would train
    online_dpo:  every round: two samples per prompt from the current policy (the rollout engines, as `feedback
                 generate` samples) -> labels from feedback.source (simulated, or people / simulated annotators
                 through the service) -> DPO on this round's new pairs only

Each round's DPO (stages/dpo.py: the policy's Ray + DeepSpeed group, reference log-probs of the round's start)
starts from the policy the previous round exported; the next round samples from the new one. A restarted
pipeline reuses finished rounds and the round's stored labels, and its DPO goes on from its newest checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf_dist.config import RLHFConfig, with_overrides

if TYPE_CHECKING:
    from rlhf_dist.feedback import FeedbackStore
    from rlhf_dist.stages.pipeline import RoundResult
    from rlhf_dist.stages.resume import PipelineState

log = logging.getLogger(__name__)


def round_collects_labels(cfg: RLHFConfig, round_index: int) -> bool:
    """Whether this round samples the current policy and has the samples judged (else: the configured data)."""
    pipe = cfg.pipeline
    return pipe.method == "online_dpo" or round_index > 1 or pipe.first_round_preferences == "policy_samples"


def run_dpo_round(cfg: RLHFConfig, round_index: int, round_dir: Path, policy_dir: Path, store: FeedbackStore,
                  snapshots: list[Path], state: PipelineState) -> RoundResult:
    """Preferences for this round, then DPO from policy_dir; the exported policy (see the module docstring)."""
    from rlhf_dist.stages.dpo import run_dpo_stage
    from rlhf_dist.stages.pipeline import RoundResult, round_preferences

    done = state.finished_policy(round_index)
    if done is not None:
        if (snapshot := state.snapshot(round_index)) is not None:
            snapshots.append(snapshot)
        log.info("round %d finished in an earlier run: its policy %s is reused", round_index, done)
        return RoundResult(None, done, {}, state.round(round_index).get("dpo_metrics", {}))
    dpo_cfg = with_overrides(cfg, {"run.output_dir": str(round_dir), "policy.path": str(policy_dir)})
    if round_collects_labels(cfg, round_index):
        online = cfg.pipeline.method == "online_dpo"
        train_file, eval_file = round_preferences(cfg, round_index, round_dir, policy_dir, store, snapshots, None,
                                                  state, only_this_round=online)
        dpo_cfg = with_overrides(dpo_cfg, {"data.pairs_path": str(train_file), "data.eval_pairs_path": str(eval_file),
                                           "data.pairs_format": "ab"})
    if state.round(round_index).get("dpo_started"):  # the round's checkpoints are its DPO's (SFT keeps none)
        log.info("round %d: DPO started in an earlier run: it continues from its newest checkpoint in %s, if any",
                 round_index, round_dir / "checkpoints")
        dpo_cfg = with_overrides(dpo_cfg, {"checkpoint.resume": "auto"})
    state.record(round_index, dpo_started=True)
    result = run_dpo_stage(dpo_cfg)
    held_out = result.history[-1] if result.history else {}  # the last epoch's held-out figures
    state.record(round_index, dpo_metrics=held_out, policy_dir=result.policy_dir)
    log.info("round %d (%s): held-out preference accuracy %s on %s pairs", round_index, cfg.pipeline.method,
             held_out.get("accuracy", "n/a"), held_out.get("n_pairs", "n/a"))
    return RoundResult(None, result.policy_dir, {}, held_out)
