"""Checkpoint integrity without engines: the manifest, verification and the fall-back to an older checkpoint."""

from __future__ import annotations

import json
import logging

from rlhf_dist.driver.checkpoint import MANIFEST, CheckpointManager
from rlhf_dist.driver.state import DriverState


class Done:
    """A group call that has finished (what a trainer group's Pending is once its ranks answered)."""

    def result(self, timeout_s=None):
        return None


class FakeTrainer:
    """Writes a shard file as a trainer group's save_checkpoint does (the manager only needs these two)."""

    def save_checkpoint(self, directory, tag):
        directory.mkdir(parents=True)
        (directory / f"{tag}.bin").write_bytes(b"weights" * 100)
        return Done()

    def load_checkpoint(self, directory, tag):
        assert (directory / f"{tag}.bin").is_file()
        return Done()


def saved(tmp_path, steps=(2, 4), checksums=True):
    ckpt = CheckpointManager(tmp_path, keep_last=3, checksums=checksums)
    for step in steps:
        ckpt.save(DriverState(step=step), {"policy": FakeTrainer()})
    return ckpt


def test_manifest_lists_every_file_with_size_and_sha256(tmp_path):
    ckpt = saved(tmp_path)
    manifest = json.loads((ckpt.root / "step_000004" / MANIFEST).read_text())
    assert set(manifest["files"]) == {"driver_state.json", "policy/state.bin"}
    state = manifest["files"]["policy/state.bin"]
    assert state["size"] == 700 and len(state["sha256"]) == 64
    assert ckpt.latest() == ckpt.root / "step_000004"


def test_corrupt_latest_falls_back_to_the_previous_complete_one(tmp_path, caplog):
    ckpt = saved(tmp_path)
    shard = ckpt.root / "step_000004" / "policy" / "state.bin"
    shard.write_bytes(b"Weights" * 100)  # same size, different bytes: only the checksum sees it
    with caplog.at_level(logging.WARNING):
        assert ckpt.latest() == ckpt.root / "step_000002"
    assert "step_000004 is not usable" in caplog.text and "differs" in caplog.text


def test_truncated_or_missing_files_and_missing_manifest_are_skipped(tmp_path):
    ckpt = saved(tmp_path, steps=(2, 4, 6), checksums=False)
    (ckpt.root / "step_000006" / "policy" / "state.bin").write_bytes(b"cut")  # size check, no checksums
    (ckpt.root / "step_000004" / MANIFEST).unlink()  # cut short before the manifest (or an old format)
    assert ckpt.latest() == ckpt.root / "step_000002"
    assert ckpt.verify(ckpt.root / "step_000006") == "policy/state.bin differs from the manifest (size or sha256)"


def test_partial_write_leaves_the_previous_checkpoint_and_no_tracker_change(tmp_path):
    ckpt = saved(tmp_path, steps=(2,))

    class Dies(FakeTrainer):
        def save_checkpoint(self, directory, tag):
            super().save_checkpoint(directory, tag)
            raise RuntimeError("killed mid-write")

    try:
        ckpt.save(DriverState(step=4), {"policy": Dies()})
    except RuntimeError:
        pass
    assert (ckpt.root / "step_000004.tmp").is_dir() and not (ckpt.root / "step_000004").exists()
    assert (ckpt.root / "latest").read_text() == "step_000002" and ckpt.latest() == ckpt.root / "step_000002"
    assert ckpt.load(ckpt.latest(), {"policy": FakeTrainer()}).step == 2


def test_no_checkpoint_dir_means_none(tmp_path):
    assert CheckpointManager(tmp_path, keep_last=1).latest() is None


SLOW_WRITER = """
import sys, time
from pathlib import Path
from rlhf_dist.driver.checkpoint import CheckpointManager
from rlhf_dist.driver.state import DriverState

class SlowTrainer:
    def save_checkpoint(self, directory, tag):
        directory.mkdir(parents=True)
        with open(directory / f"{tag}.bin", "wb") as f:
            for _ in range(10_000):  # a big shard, written slowly
                f.write(b"x" * 4096)
                f.flush()
                time.sleep(0.001)
        return self

    def result(self, timeout_s=None):
        return None

print("writing", flush=True)
CheckpointManager(Path(sys.argv[1]), keep_last=3).save(DriverState(step=4), {"policy": SlowTrainer()})
"""


def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_loadable(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    ckpt = saved(tmp_path, steps=(2,))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    shard = tmp_path / "checkpoints" / "step_000004.tmp" / "policy" / "state.bin"
    deadline = time.monotonic() + 60
    while not (shard.is_file() and shard.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and shard.is_file()  # killed in the middle of the shard
    assert ckpt.latest() == ckpt.root / "step_000002"
    assert ckpt.load(ckpt.latest(), {"policy": FakeTrainer()}).step == 2
