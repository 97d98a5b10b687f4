"""Atomic PPO checkpoints: written aside, renamed into place, tracker file last.

    <run>/checkpoints/step_000004/{policy,critic}/...   DeepSpeed (or torch) engine states
    <run>/checkpoints/step_000004/driver_state.json     step, data position, KL/normaliser, RNG
    <run>/checkpoints/latest                            name of the newest complete checkpoint

A crash while writing leaves only a `.tmp` dir, which is ignored and later removed: the
previous checkpoint stays intact and resumable. (Multi-node: the run dir must be shared.)
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf_dist.driver.state import DriverState
from rlhf_dist.utils import write_json

if TYPE_CHECKING:
    from rlhf_dist.workers.role_groups import TrainerGroup

log = logging.getLogger(__name__)
TAG = "state"


class CheckpointManager:
    def __init__(self, run_dir: Path, keep_last: int):
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def save(self, state: DriverState, trainers: dict[str, TrainerGroup]) -> Path:
        """trainers: {"policy": group, "critic": group (GAE only)}; every rank writes its part."""
        name = f"step_{state.step:06d}"
        tmp, final = self.root / f"{name}.tmp", self.root / name
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for role, group in trainers.items():
            group.save_checkpoint(tmp / role, TAG)
        write_json(tmp / "driver_state.json", state.to_json())
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        (self.root / "latest.tmp").write_text(name)
        (self.root / "latest.tmp").replace(self.root / "latest")
        self._prune()
        log.info("checkpoint %s written", final)
        return final

    def latest(self) -> Path | None:
        tracker = self.root / "latest"
        if not tracker.is_file():
            return None
        path = self.root / tracker.read_text().strip()
        return path if (path / "driver_state.json").is_file() else None

    def load(self, path: Path, trainers: dict[str, TrainerGroup]) -> DriverState:
        for role, group in trainers.items():
            group.load_checkpoint(path / role, TAG)
        state = DriverState(**json.loads((path / "driver_state.json").read_text()))
        log.info("resumed from %s (step %d)", path, state.step)
        return state

    def _prune(self) -> None:
        for stale in self.root.glob("*.tmp"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        done = sorted(p for p in self.root.glob("step_*") if p.is_dir())
        for old in done[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)
