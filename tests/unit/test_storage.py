"""Path / URI logic of rlhf_dist/storage.py and `rlhf-dist submit`'s per-job run dir (pure, no server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_dist import storage
from rlhf_dist.cli import main
from rlhf_dist.cluster import submit
from rlhf_dist.config import ConfigError, load_config


@pytest.mark.parametrize("text, uri", [("s3://b/run", True), ("gs://b/x", True), ("hdfs://nn/x", True),
                                       ("file:///tmp/x", False), ("/shared/runs/x", False), ("runs/x", False),
                                       ("C:/runs", False)])
def test_is_uri(text, uri):
    assert storage.is_uri(text) is uri


def test_local_path_and_staging_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_DIST_STAGING", str(tmp_path))
    assert storage.local_path("file:///data/run") == Path("/data/run")
    assert storage.local_path("runs/x") == Path("runs/x")
    staged = storage.local_path("s3://bucket/runs/exp1")
    assert staged.parent == tmp_path and staged.name.startswith("exp1-")
    # stable per URI (a restart finds it again), distinct for different URIs, a trailing slash is the same run
    assert staged == storage.staging_dir("s3://bucket/runs/exp1/")
    assert staged != storage.staging_dir("s3://other/runs/exp1")


def test_remote_of_finds_the_marker_of_a_staging_dir(tmp_path):
    (tmp_path / storage.MARKER).write_text(json.dumps({"uri": "s3://bucket/runs/a"}))
    assert storage.remote_of(tmp_path) == ("s3://bucket/runs/a", "")
    assert storage.remote_of(tmp_path / "round2" / "checkpoints") == ("s3://bucket/runs/a", "round2/checkpoints")
    assert storage.remote_of(tmp_path.parent) is None  # a plain local run: no mirroring, no copies


def test_unknown_scheme_is_a_config_error():
    cfg = load_config("configs/tiny.yaml", ["run.output_dir=nope://x/run"])
    with pytest.raises(ConfigError, match="run.output_dir nope://x/run: cannot open it"):
        storage.localize(cfg)


@pytest.mark.parametrize("given, job, expected", [
    ("/shared/runs", "j1", "/shared/runs/j1"), ("s3://b/runs/", "j1", "s3://b/runs/j1"),
    ("s3://b/runs?endpoint_override=http://m:9000", "j1", "s3://b/runs/j1?endpoint_override=http://m:9000"),
    ("file:///shared/runs", "j", "file:///shared/runs/j")])
def test_each_job_gets_its_own_run_dir(given, job, expected):
    assert submit.job_output_dir(given, job) == expected


def test_a_relative_output_dir_is_refused_before_anything_reaches_the_cluster(capsys):
    # nothing listens on port 1: the refusal must come before any connection attempt
    code = main(["submit", "configs/tiny.yaml", "--address", "http://127.0.0.1:1", "--run.output_dir", "runs/x"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "run.output_dir 'runs/x' is relative" in err and "s3://bucket/runs" in err


def test_with_output_dir_replaces_a_given_one():
    got = submit.with_output_dir(["ppo.steps=2", "run.output_dir=/a"], "/a/j")
    assert got == ["ppo.steps=2", "run.output_dir=/a/j"]
    assert submit.new_job_id("ppo").startswith("rlhf-ppo-") and submit.new_job_id("ppo") != submit.new_job_id("ppo")


def test_pull_from_a_local_run_dir(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "policy").mkdir(parents=True)
    (run / "policy" / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    (run / "checkpoints").mkdir()  # not pulled
    assert main(["pull", str(run), "--to", str(tmp_path / "here")]) == 0
    assert sorted(p.name for p in (tmp_path / "here").iterdir()) == ["metrics.jsonl", "policy"]
    assert json.loads((tmp_path / "here" / "policy" / "config.json").read_text()) == {}
    assert main(["pull", str(tmp_path / "missing"), "--to", str(tmp_path / "x")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["pull", str(run), "--to", str(run)]) == 2
