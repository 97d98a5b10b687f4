"""Atomic PPO checkpoints: written aside, renamed into place, tracker file last.

    <run>/checkpoints/step_000004/{policy,critic}/...   DeepSpeed (or torch) engine states
    <run>/checkpoints/step_000004/driver_state.json     step, data position, KL/normaliser, RNG
    <run>/checkpoints/step_000004/MANIFEST.json         size and sha256 of every file above (written last)
    <run>/checkpoints/latest                            name of the newest complete checkpoint

A crash while writing leaves only a `.tmp` dir, which is ignored and later removed: the
previous checkpoint stays intact and resumable. Loading verifies the manifest; a corrupt or
partial checkpoint is skipped (with a warning) for the next older complete one.
(Multi-node: the run dir must be shared.) run.output_dir a storage URI: rlhf_dist/storage.py mirrors each
checkpoint there, tracker last, and latest() downloads the remote's newest when it is not here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf_dist.driver.state import DriverState
from rlhf_dist.storage import fetch_checkpoint, push_checkpoint
from rlhf_dist.utils import write_json

if TYPE_CHECKING:
    from rlhf_dist.workers.role_groups import TrainerGroup

log = logging.getLogger(__name__)
TAG = "state"
MANIFEST = "MANIFEST.json"  # written last inside a checkpoint: sizes and sha256 of every other file


class CheckpointManager:
    def __init__(self, run_dir: Path, keep_last: int, checksums: bool = True):
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last, self.checksums = keep_last, checksums
        # Checkpoints verified by this process: a renamed checkpoint dir never changes, so the resume check
        # at start-up and the restore that follows hash its shards once, not twice.
        self._verified: set[Path] = set()

    def save(self, state: DriverState, trainers: dict[str, TrainerGroup]) -> Path:
        """trainers: {"policy": group, "critic": group (GAE only)}; every rank writes its part.

        Order: shards and driver state into <name>.tmp, then MANIFEST (sizes, sha256), then the
        rename, then the tracker. A crash at any point leaves the previous checkpoint loadable."""
        name = f"step_{state.step:06d}"
        tmp, final = self.root / f"{name}.tmp", self.root / name
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        saving = [group.save_checkpoint(tmp / role, TAG) for role, group in trainers.items()]  # groups in parallel
        for pending in saving:
            pending.result()
        write_json(tmp / "driver_state.json", state.to_json())
        write_json(tmp / MANIFEST, {"step": state.step, "files": _file_table(tmp, self.checksums)})
        shutil.rmtree(final, ignore_errors=True)
        self._verified.discard(final)
        tmp.rename(final)
        (self.root / "latest.tmp").write_text(name)
        (self.root / "latest.tmp").replace(self.root / "latest")
        self._prune()
        log.info("checkpoint %s written", final)
        # run.output_dir a storage URI: mirror it there (its tracker last); a plain local run: nothing
        push_checkpoint(self.root, name, [p.name for p in self.root.glob("step_*") if p.is_dir()])
        return final

    def latest(self) -> Path | None:
        """The newest checkpoint whose manifest verifies; a corrupt or partial one is skipped with a warning."""
        fetch_checkpoint(self.root)  # a run mirrored to a URI: its newest complete checkpoint, when not here
        if not self.root.is_dir():
            return None
        tracker = self.root / "latest"
        named = [self.root / tracker.read_text().strip()] if tracker.is_file() else []
        steps = sorted((p for p in self.root.glob("step_*") if p.is_dir() and p.suffix != ".tmp"), reverse=True)
        for path in dict.fromkeys(named + steps):  # the tracker's first, then newest to oldest
            problem = None if path in self._verified and path.is_dir() else self.verify(path)
            if problem is None:
                self._verified.add(path)
                return path
            log.warning("checkpoint %s is not usable (%s): trying an older one", path, problem)
        return None

    def verify(self, path: Path) -> str | None:
        """None when `path` is a complete checkpoint, else what is wrong with it."""
        if not (path / "driver_state.json").is_file():
            return "no driver_state.json"
        manifest = path / MANIFEST
        if not manifest.is_file():
            return "no manifest: written by an older version or cut short"
        try:
            expected = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError) as err:
            return f"unreadable manifest ({err})"
        actual = _file_table(path, self.checksums and all("sha256" in f for f in expected.values()))
        for rel, info in expected.items():
            got = actual.get(rel)
            if got is None:
                return f"{rel} is missing"
            if got != {k: info[k] for k in got}:
                return f"{rel} differs from the manifest (size or sha256)"
        return None

    def load(self, path: Path, trainers: dict[str, TrainerGroup]) -> DriverState:
        loading = [group.load_checkpoint(path / role, TAG) for role, group in trainers.items()]
        for pending in loading:
            pending.result()
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


def _file_table(directory: Path, checksums: bool) -> dict[str, dict]:
    """relative path -> {size[, sha256]} of every file under `directory` except the manifest."""
    table = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        entry: dict = {"size": path.stat().st_size}
        if checksums:
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            entry["sha256"] = digest.hexdigest()
        table[path.relative_to(directory).as_posix()] = entry
    return table
