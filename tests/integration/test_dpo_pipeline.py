"""Rounds that learn from the votes by DPO (pipeline.method, issue #27): `rlhf-dist pipeline ... --pipeline.method
online_dpo --pipeline.rounds 2 --feedback.source service-simulated` as a user types it, and offline DPO rounds."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from rlhf_dist.cli import main
from rlhf_dist.data import load_records
from rlhf_dist.feedback.db import open_database, transaction
from rlhf_dist.feedback.tables import Campaign, Pair
from rlhf_dist.tracking import read_metrics

pytestmark = pytest.mark.slow

# the tiny preset's DPO trains on cluster.policy's 2 ranks (ZeRO-2); small rounds, votes through the HTTP API
SMALL = ["--tracking.tensorboard", "false", "--tracking.progress", "false", "--data.demo_size", "64",
         "--pipeline.run_sft", "false", "--pipeline.pairs_per_round", "40", "--feedback.simulated.count", "3",
         "--feedback.simulated.tie_margin", "0.05", "--rollout.sampling.max_new_tokens", "12",
         "--dpo.train.global_batch_size", "8", "--dpo.train.micro_batch_size", "4", "--eval.num_prompts", "8",
         "--cluster.local_num_cpus", "2"]


def test_online_dpo_rounds_learn_from_the_current_policys_pairs_judged_through_the_service(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["pipeline", "-c", "configs/tiny.yaml", "--pipeline.method", "online_dpo", "--pipeline.rounds", "2",
                 "--feedback.source", "service-simulated", "--run.output_dir", str(run), *SMALL])
    assert code == 0, capsys.readouterr().err[-3000:]

    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "online_dpo" and summary["rm_accuracy"] is None  # no reward model trained
    assert 0.0 <= summary["dpo_accuracy"] <= 1.0 and 0.0 <= summary["win_rate"] <= 1.0
    assert not any(run.rglob("reward_model")) and not (run / "ppo_metrics.json").exists()
    # each round's DPO trained on that round's new pairs only (both snapshots: 40 pairs x overlap 1)
    snapshots = [load_records(p, "ab").records for p in summary["feedback_snapshots"]]
    for round_dir, rows in ((run, snapshots[0]), (run / "round2", snapshots[1])):
        used = sum(len(load_records(round_dir / f, "ab").records) for f in ("feedback_train.jsonl",
                                                                            "feedback_eval.jsonl"))
        assert used == len(rows) == 40
        assert read_metrics(round_dir / "metrics.jsonl", phase="dpo/train")
        assert read_metrics(round_dir / "metrics.jsonl", phase="dpo/eval")
        assert {p.name for p in (round_dir / "logs").glob("dpo-*.log")} >= {"dpo-0.log", "dpo-1.log"}  # 2 ranks
        assert (round_dir / "policy" / "config.json").is_file()
    # round 2 sampled its pairs from round 1's policy and its DPO started there
    assert f"path: {run / 'policy'}" in (run / "round2" / "config.yaml").read_text()
    with transaction(open_database(f"sqlite:///{run / 'feedback.sqlite'}")) as session:
        campaign = session.scalars(select(Campaign).where(Campaign.name == "tiny-round-2")).one()
        sources = {p.source_a for p in session.scalars(select(Pair).where(Pair.campaign_id == campaign.id))}
    assert len(sources) == 1 and sources.pop().startswith(str(run / "policy") + "@")
    state = json.loads((run / "pipeline_state.json").read_text())["rounds"]
    assert state["2"]["dpo_started"] and state["2"]["policy_dir"] == str(run / "round2" / "policy")

    # run again: both rounds are finished, reused, nothing sampled or trained again
    mtime = (run / "round2" / "policy" / "config.json").stat().st_mtime_ns
    assert main(["pipeline", "-c", "configs/tiny.yaml", "--pipeline.method", "online_dpo", "--pipeline.rounds", "2",
                 "--feedback.source", "service-simulated", "--run.output_dir", str(run), *SMALL]) == 0
    assert (run / "round2" / "policy" / "config.json").stat().st_mtime_ns == mtime
    assert "round 2 finished in an earlier run" in capsys.readouterr().out


def test_online_dpo_refuses_a_source_that_adds_no_labels(tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["pipeline", "-c", "configs/tiny.yaml", "--pipeline.method", "online_dpo", "--feedback.source",
                 "store", "--run.output_dir", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "feedback.source 'store'" in err
    assert not run.exists()  # nothing written
