"""SFT and reward-model training on a role's Ray + DeepSpeed group: the driver side.

    outcome = train_on_group(cfg, stage, tracker)

The driver holds no model: it places the stage's ranks on its role's resources (SFT on cluster.policy,
the reward model on cluster.reward; config/topology.py stage_overrides), hands them the tokenised
examples once through the object store, asks for updates in chunks (logging each update and moving
the progress bar), combines the ranks' held-out answers after every epoch, and has rank 0 export the
trained model. The group is removed when the stage ends, failed or not.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ray

from rlhf_dist.config import RLHFConfig, with_overrides
from rlhf_dist.config.topology import STAGE_ROLES, resources, stage_overrides
from rlhf_dist.config.schema_parts import TrainConfig
from rlhf_dist.driver.actors import start_ray
from rlhf_dist.tracking import MetricsLogger
from rlhf_dist.workers.group import WorkerError, create_role_placement, remove_placements
from rlhf_dist.workers.supervised import RewardTrainGroup, SFTGroup, SupervisedGroup

log = logging.getLogger(__name__)

GROUPS: dict[str, type[SupervisedGroup]] = {"sft": SFTGroup, "rm": RewardTrainGroup}
# Updates asked for per call: often enough for a live progress bar, rarely enough that calls cost nothing.
CALLS_PER_EPOCH = 20


@dataclass
class SupervisedStage:
    """What a training stage (stages/sft.py, stages/reward.py) hands the driver."""

    name: str  # "sft" | "rm" (config/topology.py STAGE_ROLES)
    train: TrainConfig
    epochs: int
    model_dir: Path  # what the model starts from
    out_dir: Path  # where rank 0 exports the trained model
    train_set: list  # tokenised examples (EncodedExample / EncodedPair)
    eval_set: list
    pad_id: int
    metrics: Callable[[list], dict[str, float]]  # the ranks' evaluate() answers, in order -> eval metrics
    eval_before: bool = False  # also evaluate the starting model (SFT's perplexity before training)


@dataclass
class SupervisedOutcome:
    history: list[dict] = field(default_factory=list)  # one eval dict per epoch (with "epoch")
    before: dict | None = None  # the starting model's eval metrics (eval_before)
    skipped_updates: int = 0  # updates the engine skipped (non-finite gradients)


def train_on_group(cfg: RLHFConfig, stage: SupervisedStage, tracker: MetricsLogger) -> SupervisedOutcome:
    """Train, evaluate every epoch and export on the stage's group; removes the group at the end.

    A rank that dies or hangs (WorkerError) costs a restart of the stage from its start on a fresh group
    (fault_tolerance.max_restarts times; the stages keep no checkpoints: they are short next to PPO)."""
    stage_cfg = with_overrides(cfg, stage_overrides(cfg, stage.name, stage.train))
    started_ray = start_ray(stage_cfg)
    try:
        for restarts in itertools.count():
            try:
                return _train_once(stage_cfg, stage, tracker)
            except WorkerError as err:
                if restarts >= cfg.fault_tolerance.max_restarts:
                    raise
                log.warning("%s: restart %d/%d from the start after a rank failure: %s", stage.name, restarts + 1,
                            cfg.fault_tolerance.max_restarts, err)
        raise AssertionError("unreachable")
    finally:
        if started_ray:
            ray.shutdown()


def _train_once(cfg: RLHFConfig, stage: SupervisedStage, tracker: MetricsLogger) -> SupervisedOutcome:
    role = STAGE_ROLES[stage.name]
    ranks = resources(cfg, role).num_actors
    placement = create_role_placement(cfg, role)
    group = None
    try:
        log.info("%s: training on %d rank(s) of cluster.%s (%s, ZeRO-%d, %s); rank logs: %s/%s-<rank>.log",
                 stage.name, ranks, role, stage.train.backend, stage.train.zero_stage, cfg.cluster.device,
                 Path(cfg.run.output_dir) / "logs", stage.name)
        group = GROUPS[stage.name](cfg, placement, ranks)
        n_updates = len(stage.train_set) // stage.train.global_batch_size
        group.init_stage(stage.model_dir, n_updates * stage.epochs, ray.put(stage.train_set),
                         ray.put(stage.eval_set), stage.pad_id).result()
        outcome = SupervisedOutcome()
        if stage.eval_before:
            outcome.before = stage.metrics(group.evaluate().result())
        _train_epochs(group, stage, n_updates, tracker, outcome)
        group.export_hf(stage.out_dir).result()
        return outcome
    finally:
        if group is not None:
            group.kill()
        remove_placements({role: placement})


def _train_epochs(group: SupervisedGroup, stage: SupervisedStage, n_updates: int, tracker: MetricsLogger,
                  outcome: SupervisedOutcome) -> None:
    chunk = max(1, n_updates // CALLS_PER_EPOCH)
    micro_steps = stage.train.global_batch_size // stage.train.micro_batch_size  # progress counts these
    update = 0
    for epoch in range(1, stage.epochs + 1):
        for first in range(0, n_updates, chunk):
            per_rank = group.train_updates(epoch, first, min(chunk, n_updates - first)).result()
            for rows in zip(*per_rank):  # one update, every rank's stats
                stats = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
                update += 1
                outcome.skipped_updates += stats["applied"] == 0.0
                tracker.log_update(stats, update, stage.name, epoch, stage.epochs, micro_steps)
        metrics = {"epoch": epoch, **stage.metrics(group.evaluate().result())}
        tracker.log_epoch(metrics, update, stage.name)
        outcome.history.append(metrics)
