"""Run outputs mirrored to S3 — a real S3-compatible server on loopback (moto's standalone server), no Ray.

Checkpoints go up files first, MANIFEST, _COMPLETE, then the tracker: an upload cut short is never the
latest, and a fresh machine resumes from the newest complete one. `pull` brings policy and metrics back.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rlhf_dist import storage
from rlhf_dist.cli import main
from rlhf_dist.config import load_config
from rlhf_dist.driver.checkpoint import CheckpointManager
from rlhf_dist.driver.state import DriverState
from rlhf_dist.utils import prepare_run_dir

URI = "s3://bucket/runs/unit"  # the `s3` fixture (tests/integration/conftest.py) starts moto's server


class ShardWriter:
    """What a trainer group does in a checkpoint: every rank writes its files into the given dir."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def save_checkpoint(self, path: Path, tag: str) -> ShardWriter:
        for rank in range(2):
            (path / tag).mkdir(parents=True, exist_ok=True)
            (path / tag / f"rank{rank}.pt").write_bytes(self.payload * (rank + 1))
        return self  # as a group's Pending: written once `.result()` returns

    def result(self, timeout_s: float | None = None) -> None:
        return None


def _staged(tmp_path: Path, monkeypatch, machine: str, uri: str = URI) -> Path:
    """The run dir a machine stages `uri` in (each `machine` has its own empty cache)."""
    monkeypatch.setenv("RLHF_DIST_STAGING", str(tmp_path / machine))
    cfg = storage.localize(load_config("configs/tiny.yaml", [f"run.output_dir={uri}"]))
    return prepare_run_dir(cfg)


def _remote(uri: str = URI) -> storage.Remote:
    return storage.Remote(uri)


def test_config_records_the_uri(s3, tmp_path, monkeypatch):
    run_dir = _staged(tmp_path, monkeypatch, "a", "s3://bucket/runs/cfg")
    assert run_dir.parent == tmp_path / "a"
    assert "output_dir: s3://bucket/runs/cfg" in (run_dir / "config.yaml").read_text()


def test_cut_short_checkpoint_upload_is_not_the_latest(s3, tmp_path, monkeypatch, caplog):
    run_dir = _staged(tmp_path, monkeypatch, "first")
    ckpt = CheckpointManager(run_dir, keep_last=2)
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    for step in (1, 2, 3):
        ckpt.save(DriverState(step=step), {"policy": ShardWriter(bytes([step]) * 1000)})
    remote = _remote()
    assert remote.read_text("checkpoints/latest") == "step_000003"
    assert remote.children("checkpoints") == ["latest", "step_000002", "step_000003"]  # keep_last=2 there too
    assert {storage.COMPLETE, "MANIFEST.json", "driver_state.json"} <= set(remote.files("checkpoints/step_000003"))

    # the upload of step 4 dies after its first file (network gone, node preempted)
    real_put, sent = storage.Remote.put_file, []

    def dies_after_one(self, local, rel):
        if sent:
            raise storage.StorageError("connection reset")
        sent.append(rel)
        real_put(self, local, rel)

    monkeypatch.setattr(storage.Remote, "put_file", dies_after_one)
    with pytest.raises(storage.StorageError):
        ckpt.save(DriverState(step=4), {"policy": ShardWriter(b"\x04" * 1000)})
    monkeypatch.setattr(storage.Remote, "put_file", real_put)
    assert remote.read_text("checkpoints/latest") == "step_000003"
    assert storage.COMPLETE not in remote.files("checkpoints/step_000004") and sent

    # even a tracker that names the partial one (written by hand here) does not make it the latest
    remote.write_text("checkpoints/latest", "step_000004")
    fresh = _staged(tmp_path, monkeypatch, "second")  # another machine: empty staging dir
    assert not (fresh / "checkpoints").exists()
    with caplog.at_level(logging.WARNING, logger="rlhf_dist.storage"):
        latest = CheckpointManager(fresh, keep_last=2).latest()
    assert latest == fresh / "checkpoints" / "step_000003"
    assert "step_000004 is incomplete" in caplog.text
    assert CheckpointManager(fresh, keep_last=2).verify(latest) is None  # sizes and sha256 match the manifest
    assert json.loads((latest / "driver_state.json").read_text())["step"] == 3
    assert (latest / "policy" / "state" / "rank1.pt").read_bytes() == b"\x03" * 2000
    assert (fresh / "metrics.jsonl").read_text().count("\n") == 2  # the history came along


def test_outputs_mirrored_once_and_pulled_back(s3, tmp_path, monkeypatch, capsys):
    uri = "s3://bucket/runs/pull"
    run_dir = _staged(tmp_path, monkeypatch, "a", uri)
    (run_dir / "policy").mkdir()
    (run_dir / "policy" / "config.json").write_text('{"model_type": "llama"}')
    (run_dir / "policy" / "model.safetensors").write_bytes(b"w" * 4096)
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    (run_dir / "ppo_metrics.json").write_text('{"history": []}')
    storage.push_outputs(run_dir)
    remote = _remote(uri)
    assert remote.files("policy") == [storage.COMPLETE, "config.json", "model.safetensors"]

    sent = []
    monkeypatch.setattr(storage.Remote, "put_file", lambda self, local, rel: sent.append(rel))
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    storage.push_outputs(run_dir)
    assert sent == ["metrics.jsonl"]  # unchanged files are not sent again
    monkeypatch.undo()

    dest = tmp_path / "laptop"
    assert main(["pull", uri, "--to", str(dest)]) == 0
    assert "pulled policy, metrics.jsonl, ppo_metrics.json, config.yaml" in capsys.readouterr().out
    assert (dest / "policy" / "model.safetensors").read_bytes() == b"w" * 4096
    assert not (dest / "policy" / storage.COMPLETE).exists()

    # a policy whose upload never finished (no _COMPLETE) is not pulled as if it were whole
    remote.fs.delete_file(remote.path(f"policy/{storage.COMPLETE}"))
    assert main(["pull", uri, "--to", str(tmp_path / "again")]) == 0
    assert not (tmp_path / "again" / "policy").exists() and (tmp_path / "again" / "metrics.jsonl").is_file()
    assert main(["pull", "s3://bucket/runs/none", "--to", str(tmp_path / "x")]) == 2
    assert "no run outputs there" in capsys.readouterr().err
