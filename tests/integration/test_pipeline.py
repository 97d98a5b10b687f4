"""The whole pipeline at tiny scale (SFT -> RM -> PPO -> eval -> report), and the seed API."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest
from sqlalchemy import select

from rlhf_dist import RLHFPipeline
from rlhf_dist.config import load_config
from rlhf_dist.feedback import admin
from rlhf_dist.feedback.client import HTTPAnnotator
from rlhf_dist.feedback.db import open_database, transaction
from rlhf_dist.feedback.tables import Campaign, Pair, Vote
from rlhf_dist.stages.pipeline import run_pipeline
from rlhf_dist.utils import Preempted

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]

TINY = ["tracking.tensorboard=false", "tracking.progress=false", "data.demo_size=64"]


def _stop_during_round2_ppo(run_dir, stop: threading.Event) -> None:
    """SIGTERM to this process once round 2's PPO logged a step (what a preempted job or Ctrl-C does)."""
    metrics = run_dir / "round2" / "metrics.jsonl"
    while not stop.wait(0.2):
        if metrics.is_file() and '"phase": "ppo"' in metrics.read_text():
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _mtimes(*dirs) -> dict:
    return {p: p.stat().st_mtime_ns for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


def _feedback_rows(run_dir) -> list[tuple]:
    with transaction(open_database(f"sqlite:///{run_dir / 'feedback.sqlite'}")) as session:
        return [(c.name, p.seed, p.prompt, p.response_a, p.response_b, v.preference, v.confidence)
                for v, p, c in session.execute(select(Vote, Pair, Campaign).join(Pair, Pair.id == Vote.pair_id)
                                               .join(Campaign, Campaign.id == Pair.campaign_id).order_by(Vote.id))]


def test_tiny_pipeline_end_to_end_learns_from_its_own_samples_and_resumes_after_a_stop(tmp_path, caplog):
    cfg = load_config("configs/tiny.yaml", TINY + [
        f"run.output_dir={tmp_path}", "pipeline.run_sft=true",
        "pipeline.rounds=2",
        "sft.train.lr=0.0001",  # a light SFT: the stage runs, yet leaves PPO room to beat its output
        "pipeline.first_round_preferences=policy_samples", "feedback.simulated.rule=lowercase",
        "feedback.simulated.tie_margin=0.1",
        "pipeline.pairs_per_round=192", "data.demo_size=192", "rollout.sampling.max_new_tokens=16",
        "ppo.rewards=[{kind: model}]", "ppo.steps=8",
        "ppo.rollout_batch_size=32",  # 32 episodes a step: a learning signal that 2 rounds of 8 steps show over seeds
        "ppo.kl.coef=0.2", "critic.init_from=reward",
        "reward_model.pooling=mean",  # a per-token readout averaged = a lowercase fraction: learnable by a tiny RM
        "eval.judge=lowercase", "eval.num_prompts=32", "checkpoint.every_steps=0", "reward.epochs=6",
    ])
    # issue #26: stopped (SIGTERM) during round 2's PPO, then run again on the same run dir
    stop = threading.Event()
    watcher = threading.Thread(target=_stop_during_round2_ppo, args=(tmp_path, stop), daemon=True)
    watcher.start()
    try:
        with pytest.raises(Preempted, match="SIGTERM"):
            run_pipeline(cfg)
    finally:
        stop.set()
        watcher.join()
    stopped_at = json.loads(next((tmp_path / "round2" / "checkpoints").glob("step_*/driver_state.json"))
                            .read_text())["step"]
    assert 1 <= stopped_at < 8 and not (tmp_path / "summary.json").exists()
    rows = _feedback_rows(tmp_path)
    rm_data = [(tmp_path / "round2" / f).read_bytes() for f in ("feedback_train.jsonl", "feedback_eval.jsonl")]
    # round 1's models, and round 2's reward model (saved before its PPO): not trained again
    kept = [tmp_path / "sft", tmp_path / "reward_model", tmp_path / "policy", tmp_path / "round2" / "reward_model"]
    finished = _mtimes(*kept)
    caplog.clear()  # the stopped run's records too, where an earlier test left rlhf_dist at INFO (the full suite)
    with caplog.at_level("INFO", logger="rlhf_dist"):
        summary = run_pipeline(cfg)
    # nothing redone, nothing added: the same judgements (one copy of each round's 192), the same RM data
    assert _feedback_rows(tmp_path) == rows and len(rows) == 384
    assert {(name, seed) for name, seed, *_ in rows} == {("tiny-round-1", 31 * cfg.run.seed + 1),
                                                         ("tiny-round-2", 31 * cfg.run.seed + 2)}
    assert [(tmp_path / "round2" / f).read_bytes() for f in ("feedback_train.jsonl", "feedback_eval.jsonl")] == rm_data
    assert sum(part.count(b"\n") for part in rm_data) == 384  # round 2's RM: all feedback so far, once
    assert _mtimes(*kept) == finished and len(finished) > 8
    said = caplog.text
    assert "round 1 finished in an earlier run" in said and "192 judgements already stored" in said
    assert "round 2: the reward model saved in an earlier run" in said and f"(step {stopped_at})" in said
    assert "sampled 192 pairs" not in said  # none sampled again (feedback/generate.py logs each sampling)
    ppo = json.loads((tmp_path / "round2" / "ppo_metrics.json").read_text())["history"]
    assert [m["step"] for m in ppo] == list(range(stopped_at + 1, 9))  # round 2 went on from its checkpoint
    logged = [json.loads(line) for line in (tmp_path / "round2" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(m["step"] for m in logged if m.get("phase") == "ppo") == list(range(1, 9))  # each step once

    # figures of the issue, at tiny scale. The win rate by the held-out judge is reported, not asserted:
    # a random tiny byte-level policy learns the RM's score (asserted below) faster than the judged
    # feature; the SmolLM2 demo and tests/integration/test_ppo_engine.py show judged learning.
    # ~30 held-out pairs in the last round: chance is 0.5 +- 0.09; the seeds tried gave 0.62-0.90.
    assert summary["rm_accuracy"] >= 0.6, summary
    assert 0.0 <= summary["win_rate"] <= 1.0 and summary["eval"]["n_prompts"] == 32, summary
    assert 0 <= summary["kl"] < 20, summary  # nats per 16-token response after 2 rounds of 8 steps
    # The final policy outscores the starting one under the last RM on the same 32 held-out prompts.
    # (Not one PPO step's score against another: with 16-sample steps it moved by +-0.7 step to step.)
    assert summary["eval"]["reward_mean"] > summary["eval"]["reward_mean_start"], summary["eval"]
    assert summary["feedback"]["per_round"] == {"1": 192, "2": 192}
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert {"rm_accuracy", "win_rate", "kl", "wall_seconds"} <= set(on_disk)
    for name in ("report.md", "report.html", "ppo_reward.png", "rm_loss_accuracy.png", "eval.png"):
        assert (tmp_path / "report" / name).is_file(), name
    assert (tmp_path / "sft" / "config.json").is_file() and (tmp_path / "round2" / "policy" / "config.json").is_file()


def test_seed_api_collect_train_rm_then_ppo(tmp_path):
    pipe = RLHFPipeline("configs/tiny.yaml", TINY + [f"run.output_dir={tmp_path}", "ppo.rewards=[{kind: model}]",
                                                     "checkpoint.every_steps=0"])
    for i in range(24):
        good, bad = f"lovely great visit number {i}", f"AWFUL {i}!!"
        pipe.stage1_collect_feedback(f"Review place {i}.", good if i % 2 else bad, bad if i % 2 else good,
                                     preference=1 - i % 2, confidence=0.9, reasoning="kinder")
    pipe.stage1_collect_feedback("Tie?", "same", "same too", preference=2, confidence=0.4)
    with pytest.raises(ValueError, match="preference"):
        pipe.stage1_collect_feedback("p", "a", "b", preference=3)
    rm = pipe.stage2_train_reward_model(num_epochs=2, batch_size=8)
    ppo = pipe.stage3_train_policy_with_ppo(num_epochs=2, batch_size=8)
    status = pipe.get_training_status()
    assert status["feedback_statistics"]["total"] == 25 and status["feedback_statistics"]["ties"] == 1
    assert status["reward_model_metrics"]["accuracy"] == rm["accuracy"] and 0.0 <= rm["accuracy"] <= 1.0
    assert status["ppo_metrics"]["steps"] == 2 == ppo["steps"]
    # durable: a new pipeline object on the same run dir sees the same feedback
    assert len(RLHFPipeline("configs/tiny.yaml", TINY + [f"run.output_dir={tmp_path}"]).store) == 25

    # people in the loop: pairs from the PPO policy, judged through the service, in the same store
    url = pipe.start_feedback_service()
    try:
        assert pipe.generate_feedback_pairs("round-2", prompts=[f"Review cafe {i}." for i in range(4)]) == 4
        token = admin.add_annotator(pipe.store.sessions, "person")
        votes = HTTPAnnotator(url, token, "round-2", lambda _p, left, right: ("left", 0.7)).work()
    finally:
        pipe.stop_feedback_service()
    assert len(votes.acked_vote_ids) == 4 and len(pipe.store) == 29
    report = pipe.human_evaluation_report("round-2")
    assert report["votes"] == 4 and report["ci_low"] <= report["win_rate"] <= report["ci_high"]
    assert pipe.get_training_status()["human_evaluation"] == report

    # stage 3 the other way (pipeline.method dpo): DPO of the PPO policy on all 29 stored votes, no reward model
    ppo_policy = pipe.policy_dir
    dpo = pipe.stage3_train_policy_with_dpo(num_epochs=1, batch_size=8)
    assert pipe.get_training_status()["dpo_metrics"] == dpo and 0.0 <= dpo["final"]["accuracy"] <= 1.0
    assert pipe.policy_dir == tmp_path / "dpo" / "policy" and (pipe.policy_dir / "config.json").is_file()
    assert f"path: {ppo_policy}" in (tmp_path / "dpo" / "config.yaml").read_text()  # started from PPO's policy
