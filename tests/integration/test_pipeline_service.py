"""Rounds whose labels come from the feedback service: simulated annotators as HTTP clients, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from rlhf_dist.config import load_config
from rlhf_dist.data import load_records
from rlhf_dist.feedback.db import open_database, transaction
from rlhf_dist.feedback.tables import Campaign, Pair, Vote
from rlhf_dist.stages.pipeline import run_pipeline

pytestmark = pytest.mark.slow

SERVICE = ["tracking.tensorboard=false", "tracking.progress=false", "data.demo_size=64", "pipeline.run_sft=false",
           "pipeline.first_round_preferences=policy_samples", "pipeline.pairs_per_round=40",
           "feedback.simulated.rule=lowercase", "feedback.simulated.count=3", "feedback.simulated.tie_margin=0.05",
           "feedback.simulated.position_bias=0.1", "rollout.sampling.max_new_tokens=12",
           "ppo.rewards=[{kind: model}]", "ppo.steps=2", "reward.epochs=2", "eval.num_prompts=8",
           "checkpoint.every_steps=0"]


@pytest.mark.usefixtures("ray_cluster")
def test_two_service_simulated_rounds_and_a_human_evaluation(tmp_path):
    cfg = load_config("configs/tiny.yaml", SERVICE + [
        f"run.output_dir={tmp_path}", "pipeline.rounds=2", "feedback.source=service-simulated",
        "feedback.human_eval_prompts=12", "feedback.overlap=2", "feedback.selection=uncertainty"])
    summary = run_pipeline(cfg)

    snapshots = summary["feedback_snapshots"]
    assert [os.path.basename(p) for p in snapshots] == ["tiny-round-1.jsonl", "tiny-round-2.jsonl"]
    snapshot_rows = [len(load_records(p, "ab").records) for p in snapshots]
    assert snapshot_rows == [40, 40]
    # round 2's reward model trained (and was validated) on both snapshots
    round2 = [len(load_records(tmp_path / "round2" / f, "ab").records) for f in ("feedback_train.jsonl",
                                                                                 "feedback_eval.jsonl")]
    assert sum(round2) == sum(snapshot_rows)
    # PPO of round 2 started from round 1's policy
    round2_cfg = (tmp_path / "round2" / "config.yaml").read_text()
    assert str(tmp_path / "policy") in round2_cfg

    with transaction(open_database(f"sqlite:///{tmp_path / 'feedback.sqlite'}")) as session:
        campaigns = {c.name: c for c in session.scalars(select(Campaign))}
        votes = list(session.scalars(select(Vote)))
        pairs = list(session.scalars(select(Pair).where(Pair.campaign_id == campaigns["tiny-round-2"].id)))
    assert {"tiny-round-1", "tiny-round-2", "tiny-human-eval"} <= set(campaigns)
    assert campaigns["tiny-human-eval"].kind == "evaluation"
    assert len(votes) == 40 * 2 + 40 * 2 + 12 * 2  # overlap 2 everywhere, all through the HTTP API
    assert all(p.source_a.startswith(str(tmp_path / "policy")) and p.logprobs_json for p in pairs)
    assert len({p.queue_rank for p in pairs}) > 1  # uncertainty ranks from round 1's reward model

    human = summary["human_evaluation"]
    assert human["votes"] == 24 and human["pairs"] == 12
    assert 0.0 <= human["ci_low"] <= human["win_rate"] <= human["ci_high"] <= 1.0
    assert json.loads((tmp_path / "summary.json").read_text())["human_evaluation"] == human


def _pairs(db_url: str) -> list[tuple[int, str, str]]:
    with transaction(open_database(db_url)) as session:
        return [(p.id, p.response_a, p.response_b) for p in session.scalars(select(Pair).order_by(Pair.id))]


def test_a_restarted_pipeline_waits_for_the_same_pairs(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    args = [sys.executable, "-m", "rlhf_dist.cli", "pipeline", "-c", "configs/tiny.yaml",
            "--run.output_dir", str(tmp_path), "--pipeline.rounds", "1", "--cluster.local_num_cpus", "2"]
    for override in SERVICE:
        key, value = override.split("=", 1)
        args += [f"--{key}", value]
    log = open(tmp_path / "first.log", "wb")
    first = subprocess.Popen(args + ["--feedback.source", "service"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and first.poll() is None:  # wait until it waits for votes
            if (tmp_path / "feedback.sqlite").exists() and len(_pairs(db_url)) == 40:
                break
            time.sleep(1)
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        before = _pairs(db_url)
        assert len(before) == 40
        time.sleep(2)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    second = subprocess.run(args + ["--feedback.source", "service-simulated"], capture_output=True, text=True,
                            timeout=900)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-4000:]
    assert "already holds 40 pairs" in second.stdout + second.stderr  # progress and logs go to the console (stdout)
    assert _pairs(db_url) == before  # the round went on with the same pairs, none regenerated
    done = json.loads((tmp_path / "pipeline_state.json").read_text())["rounds"]["1"]  # what a restart would reuse
    assert done["snapshot"].endswith("tiny-round-1.jsonl") and done["policy_dir"] == str(tmp_path / "policy")
    with transaction(open_database(db_url)) as session:
        assert len(session.scalars(select(Vote)).all()) == 40
