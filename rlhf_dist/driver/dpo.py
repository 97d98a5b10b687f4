"""DPO on the policy's Ray + DeepSpeed group: the driver side (stages/dpo.py prepares the data).

    outcome = train_dpo_on_group(cfg, stage, tracker)

As SFT and reward-model training (driver/supervised.py): the ranks are placed on cluster.policy's
resources, get the tokenised pairs once through the object store, train in chunks of updates with every
update logged, are evaluated on the held-out pairs after each epoch, and rank 0 exports <run>/policy.
What DPO adds:

- reference log-probs, once per pair, by the group before its first update (the starting policy is the
  reference), cached in <run>/dpo/reference_logprobs.safetensors with a fingerprint of the model and
  the tokenised pairs; a resume (or a restart after a fault) reads them back instead of recomputing;
- checkpoints every checkpoint.every_steps optimizer updates and at the end (driver/checkpoint.py:
  engine state + DriverState with the update count and the epochs' held-out metrics); `--resume`
  continues from the newest complete one with the same batches (the order is a function of the seed and
  the epoch), so the resumed run's metrics equal the uninterrupted run's.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import ray
import torch

from rlhf_dist.algo import reduce_dpo
from rlhf_dist.algo.dpo_registry import DPO_LOSSES
from rlhf_dist.config import RLHFConfig, with_overrides
from rlhf_dist.config.topology import resources, stage_overrides
from rlhf_dist.driver.actors import start_ray
from rlhf_dist.driver.checkpoint import CheckpointManager
from rlhf_dist.driver.state import DriverState
from rlhf_dist.models.shards import share_weights
from rlhf_dist.driver.supervised import CALLS_PER_EPOCH
from rlhf_dist.tracking import MetricsLogger
from rlhf_dist.workers.dpo import DPOGroup
from rlhf_dist.workers.group import WorkerError, create_role_placement, remove_placements

log = logging.getLogger(__name__)
REFERENCE_CACHE = Path("dpo") / "reference_logprobs.safetensors"


@dataclass
class DPOStage:
    """What stages/dpo.py hands the driver."""

    model_dir: Path  # the starting policy (also the reference)
    out_dir: Path  # where rank 0 exports the trained policy
    train_set: list  # EncodedPair
    eval_set: list
    pad_id: int
    fingerprint: str  # of the model and the tokenised pairs: a cache written for other inputs is not used


@dataclass
class DPOOutcome:
    history: list[dict] = field(default_factory=list)  # one held-out dict per epoch (with "epoch")
    skipped_updates: int = 0
    reference_cached: bool = False  # the reference log-probs came from the run dir's cache


def dpo_eval_metrics(answers: list[tuple[torch.Tensor, ...]]) -> dict[str, float]:
    """Held-out loss, rewards, margin and preference accuracy from the ranks' eval_batch answers."""
    losses, chosen, rejected, target, weight = (torch.cat([a[i] for a in answers]) for i in range(5))
    _, stats = reduce_dpo(losses, chosen, rejected, target, weight)
    return {**stats, "n_pairs": len(target)}


def train_dpo_on_group(cfg: RLHFConfig, stage: DPOStage, tracker: MetricsLogger,
                       ckpt: CheckpointManager) -> DPOOutcome:
    """Train, evaluate every epoch and export on the policy's group; removes the group at the end. A rank that
    dies or hangs (WorkerError) costs a restart on a fresh group from the newest checkpoint
    (fault_tolerance.max_restarts times)."""
    stage_cfg = with_overrides(cfg, stage_overrides(cfg, "dpo", cfg.dpo.train))
    started_ray = start_ray(stage_cfg)
    try:
        for restarts in itertools.count():
            try:
                return _train_once(stage_cfg, stage, tracker, ckpt, bool(cfg.checkpoint.resume) or restarts > 0)
            except WorkerError as err:
                if restarts >= cfg.fault_tolerance.max_restarts:
                    raise
                log.warning("dpo: restart %d/%d from the newest checkpoint after a rank failure: %s", restarts + 1,
                            cfg.fault_tolerance.max_restarts, err)
        raise AssertionError("unreachable")
    finally:
        if started_ray:
            ray.shutdown()


def _train_once(cfg: RLHFConfig, stage: DPOStage, tracker: MetricsLogger, ckpt: CheckpointManager,
                resume: bool) -> DPOOutcome:
    ranks = resources(cfg, "policy").num_actors
    placement = create_role_placement(cfg, "policy")
    group = None
    try:
        tcfg = cfg.dpo.train
        log.info("dpo: training on %d rank(s) of cluster.policy (%s, ZeRO-%d, %s, loss %s); rank logs: "
                 "%s/dpo-<rank>.log", ranks, tcfg.backend, tcfg.zero_stage, cfg.cluster.device, cfg.dpo.loss,
                 Path(cfg.run.output_dir) / "logs")
        group = DPOGroup(cfg, placement, ranks)
        n_updates = len(stage.train_set) // tcfg.global_batch_size
        group.init_stage(stage.model_dir, n_updates * cfg.dpo.epochs, ray.put(stage.train_set),
                         ray.put(stage.eval_set), stage.pad_id).result()
        outcome = DPOOutcome()
        chosen, rejected, outcome.reference_cached = _reference(cfg, stage, group)
        group.set_reference(chosen, rejected).result()
        latest = ckpt.latest() if resume else None
        state = ckpt.load(latest, {"policy": group}) if latest is not None else DriverState()
        outcome.history, outcome.skipped_updates = list(state.data.get("history", [])), state.skipped_updates
        _train_updates(cfg, group, state, n_updates, tracker, ckpt, outcome)
        group.export_hf(stage.out_dir).result()
        return outcome
    finally:
        if group is not None:
            group.kill()
        remove_placements({"policy": placement})


def _reference(cfg: RLHFConfig, stage: DPOStage, group: DPOGroup) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(chosen, rejected) reference log-probs of train + held-out pairs: the cache when it was written for these
    inputs, else computed by the group (before any update) and cached. Zeros for a reference-free loss."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    n = len(stage.train_set) + len(stage.eval_set)
    if DPO_LOSSES.get(cfg.dpo.loss).reference_free:
        return torch.zeros(n), torch.zeros(n), False
    path = Path(cfg.run.output_dir) / REFERENCE_CACHE
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("fingerprint") == stage.fingerprint:
                log.info("dpo: reference log-probs of %d pairs read from %s", n, path)
                return f.get_tensor("chosen"), f.get_tensor("rejected"), True
        log.warning("dpo: %s was written for other pairs or another model: computing the reference again", path)
    answers = group.reference_logprobs().result()
    chosen, rejected = torch.cat([a[0] for a in answers]), torch.cat([a[1] for a in answers])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"chosen": chosen.contiguous(), "rejected": rejected.contiguous()}, str(tmp),
              metadata={"fingerprint": stage.fingerprint})
    tmp.replace(path)  # atomic: a crash never leaves a half-written cache under the real name
    share_weights(path.parent)  # safetensors writes 0600; the run dir's other files are readable
    log.info("dpo: reference log-probs of %d pairs computed and cached in %s", n, path)
    return chosen, rejected, False


def _train_updates(cfg: RLHFConfig, group: DPOGroup, state: DriverState, n_updates: int, tracker: MetricsLogger,
                   ckpt: CheckpointManager, outcome: DPOOutcome) -> None:
    """Updates state.step .. the last, in chunks that end at epoch ends and checkpoint steps."""
    tcfg, epochs, every = cfg.dpo.train, cfg.dpo.epochs, cfg.checkpoint.every_steps
    total, chunk = n_updates * epochs, max(1, n_updates // CALLS_PER_EPOCH)
    micro_steps = tcfg.global_batch_size // tcfg.micro_batch_size
    tracker.advance(state.step * micro_steps, status="resumed" if state.step else "")
    while state.step < total:
        epoch, first = state.step // n_updates + 1, state.step % n_updates
        count = min(chunk, n_updates - first, every - state.step % every if every else total)
        for rows in zip(*group.train_updates(epoch, first, count).result()):  # one update, every rank's stats
            stats = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
            state.step += 1
            outcome.skipped_updates += stats["applied"] == 0.0
            tracker.log_update(stats, state.step, "dpo", epoch, epochs, micro_steps)
        if state.step % n_updates == 0:
            metrics = {"epoch": epoch, **dpo_eval_metrics(group.evaluate().result())}
            tracker.log_epoch(metrics, state.step, "dpo")
            outcome.history.append(metrics)
        if state.step == total or (every and state.step % every == 0):
            state.data, state.skipped_updates = {"history": outcome.history}, outcome.skipped_updates
            ckpt.save(state, {"policy": group})
