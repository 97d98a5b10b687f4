"""What a restarted pipeline finds in its run dir (stages/resume.py), and --fresh: no Ray, no models."""

from __future__ import annotations

import json

import pytest

from rlhf_dist.config import ConfigError, load_config
from rlhf_dist.feedback import admin
from rlhf_dist.feedback.db import open_database
from rlhf_dist.stages.resume import STATE_FILE, PipelineState, check_fresh, set_aside


def _model_dir(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def test_the_state_says_what_each_round_finished(tmp_path, caplog):
    cfg = load_config("configs/tiny.yaml", [f"run.output_dir={tmp_path}"])
    state = PipelineState(tmp_path, cfg)
    assert state.round(1) == {} and state.reward_model(1) is None and state.finished_policy(1) is None
    rm = _model_dir(tmp_path / "reward_model")
    state.record(1, reward_dir=rm, rm_metrics={"accuracy": 0.75})
    assert state.reward_model(1) == (rm, {"accuracy": 0.75}) and state.finished_policy(1) is None  # PPO not done
    state.record(1, policy_dir=_model_dir(tmp_path / "policy"))
    again = PipelineState(tmp_path, cfg)  # what a restarted pipeline reads
    assert again.finished_policy(1) == tmp_path / "policy" and again.finished_policy(2) is None
    assert json.loads((tmp_path / STATE_FILE).read_text())["rounds"]["1"]["reward_dir"] == str(rm)
    (tmp_path / "policy" / "config.json").unlink()  # a finished round whose policy is gone is not finished
    assert again.finished_policy(1) is None and again.reward_model(1) is not None
    # other settings than the earlier run's: said, by name; the volatile ones (rounds, checkpointing) are not
    changed = load_config("configs/tiny.yaml", [f"run.output_dir={tmp_path}", "ppo.steps=3", "pipeline.rounds=5",
                                                 "checkpoint.resume=auto"])
    with caplog.at_level("WARNING", logger="rlhf_dist.stages.resume"):
        PipelineState(tmp_path, changed)
    assert "ppo.steps" in caplog.text and "pipeline.rounds" not in caplog.text and "checkpoint" not in caplog.text


def test_fresh_moves_the_earlier_run_aside_and_refuses_what_it_cannot_clean(tmp_path, monkeypatch):
    run = tmp_path / "demo"
    assert set_aside(run) is None  # nothing there: nothing moved
    _model_dir(run / "round2" / "policy")
    (run / "feedback.sqlite").write_text("x")
    moved = set_aside(run)
    assert not run.exists() and moved.parent == tmp_path and moved.name.startswith("demo.old-")
    assert (moved / "feedback.sqlite").read_text() == "x" and (moved / "round2" / "policy" / "config.json").is_file()
    _model_dir(run)
    assert set_aside(run) != moved and len(list(tmp_path.glob("demo.old-*"))) == 2  # the same second: a new name

    with pytest.raises(ConfigError, match="storage URI"):
        check_fresh(load_config("configs/tiny.yaml", ["run.output_dir=s3://bucket/runs/x"]))
    shared = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    cfg = load_config("configs/tiny.yaml", [f"run.output_dir={tmp_path / 'r'}", f"feedback.db_url={shared}"])
    check_fresh(cfg)  # no database yet: fine, and none is created
    assert not (tmp_path / "shared.sqlite").exists()
    admin.add_pairs(open_database(shared), "other-round-1", [])
    check_fresh(cfg)  # another run's campaigns: fine
    admin.add_pairs(open_database(shared), "tiny-round-1", [])
    with pytest.raises(ConfigError, match="tiny-round-1"):
        check_fresh(cfg)
    _model_dir(run)
    monkeypatch.chdir(run)
    with pytest.raises(ConfigError, match="current directory"):
        set_aside(run)


def test_a_dpo_round_is_finished_by_its_export_alone_and_says_when_it_collects_labels(tmp_path):
    """pipeline.method dpo / online_dpo (stages/dpo_rounds.py): no reward model, so the round's DPO start
    and its exported policy say it is finished; which rounds sample and label the current policy."""
    from rlhf_dist.stages.dpo_rounds import round_collects_labels

    cfg = load_config("configs/tiny.yaml", [f"run.output_dir={tmp_path}", "pipeline.method=dpo"])
    state = PipelineState(tmp_path, cfg)
    state.record(1, policy_dir=_model_dir(tmp_path / "policy"))
    assert state.finished_policy(1) is None  # an export without a reward model or a DPO start: not a DPO round's
    state.record(1, dpo_started=True, dpo_metrics={"accuracy": 0.9})
    assert PipelineState(tmp_path, cfg).finished_policy(1) == tmp_path / "policy"
    offline = [round_collects_labels(cfg, r) for r in (1, 2, 3)]
    samples_first = load_config("configs/tiny.yaml", ["pipeline.method=dpo",
                                                      "pipeline.first_round_preferences=policy_samples"])
    online = load_config("configs/tiny.yaml", ["pipeline.method=online_dpo"])
    assert offline == [False, True, True]  # round 1 on the configured preferences
    assert round_collects_labels(samples_first, 1) and round_collects_labels(online, 1)
