"""Fault tolerance on the real engine: a role's process is killed (or stopped) by PID in the middle of a
PPO run; the driver replaces that role's group (the policy and the engines together), restores every role
from the newest complete checkpoint and finishes with the same metrics as an uninterrupted run."""

from __future__ import annotations

import json

import pytest

from rlhf_dist.config import load_config
from rlhf_dist.stages.ppo import run_ppo_stage
from rlhf_dist.workers.group import WorkerError
from tests.integration.faults import ENV, fault_spec

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]
KEYS = ["reward/score_raw", "kl/seq_k1", "policy/loss", "critic/loss", "policy/entropy"]
STEPS = ["ppo.steps=4", "checkpoint.every_steps=2"]


def fault_cfg(run_dir, *overrides):
    base = [f"run.output_dir={run_dir}", "tracking.tensorboard=false", "tracking.progress=false",
            "data.demo_size=32", "cluster.dead_actor_timeout_s=30", "cluster.reference.num_actors=1",
            "ppo.rewards=[{kind: function, function: 'tests.integration.faults:inject_once'}]"]
    return load_config("configs/tiny.yaml", base + STEPS + list(overrides))


@pytest.fixture(scope="module")
def uninterrupted(four_step_history):
    return four_step_history


def assert_same_run(reference: list[dict], history: list[dict]) -> None:
    assert [m["step"] for m in history] == [1, 2, 3, 4]
    for a, b in zip(reference, history):
        for key in KEYS:
            assert a[key] == pytest.approx(b[key], abs=1e-5), (a["step"], key)


# One run survives five faults in turn, each in a different role and phase; only the targeted process is
# signalled each time. The first fires at call 3 (step 3; checkpoint at step 2), each next one at the first
# call after the roles were rebuilt: the restart restores step 2, so every fault hits a step 3 of fresh
# actors and a later call of the same role notices it (one run, not five: each run costs a build of every
# role, the bulk of this test's time).
FAULTS = [
    "policy-1:SIGKILL",           # during inference (the policy's log-probs are in flight at scoring time)
    "reference-0:SIGKILL",        # noticed at its next call (this step's or the next step's log-probs)
    "rollout-0:SIGKILL",          # noticed at the weight sync of the same step
    "critic-0:SIGKILL:0.3",       # 0.3 s after scoring: while the critic trains, or at its next call
    "reference-0:SIGSTOP",        # hung: alive but answers nothing, until cluster.dead_actor_timeout_s
]


# What each restart replaces: the failed role only; the policy and the engines together (the weight sync
# joins them). The other roles keep their actors and are restored from the checkpoint.
REBUILT = ["policy, rollout", "reference", "policy, rollout", "critic", "reference"]


def test_each_killed_or_hung_role_is_rebuilt_and_the_run_ends_identical(tmp_path, monkeypatch, uninterrupted, caplog):
    monkeypatch.setenv(ENV, fault_spec(tmp_path, 3, *FAULTS))
    with caplog.at_level("WARNING", logger="rlhf_dist.driver.actors"):
        result = run_ppo_stage(fault_cfg(tmp_path, "fault_tolerance.max_restarts=5", "cluster.dead_actor_timeout_s=20"))
    fired = (tmp_path / "fault-fired.txt").read_text().splitlines()
    assert [line.split()[0] for line in fired] == [f.split(":")[0] for f in FAULTS]
    restarts = [r.getMessage() for r in caplog.records if "new actors for: " in r.getMessage()]
    rebuilt = [message.rsplit("new actors for: ", 1)[1] for message in restarts]
    assert rebuilt == REBUILT
    assert_same_run(uninterrupted, result.history)
    assert result.history[-1]["fault/restarts"] == len(FAULTS) and result.policy_dir is not None
    assert json.loads((tmp_path / "ppo_metrics.json").read_text())["restarts"] == len(FAULTS)


def test_restarts_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, fault_spec(tmp_path, 1, "policy-0:SIGKILL"))
    with pytest.raises(WorkerError, match="policy rank 0"):
        run_ppo_stage(fault_cfg(tmp_path, "fault_tolerance.max_restarts=0"))


def test_sigterm_checkpoints_exits_75_and_resume_auto_ends_identical(tmp_path, uninterrupted):
    import signal
    import subprocess
    import sys
    import time

    from rlhf_dist.utils import EXIT_PREEMPTED

    overrides = [f"--run.output_dir={tmp_path}", "--tracking.tensorboard=false", "--tracking.progress=false",
                 "--data.demo_size=32", "--cluster.reference.num_actors=1",
                 "--ppo.rewards=[{kind: function, function: 'tests.integration.faults:inject_once'}]",
                 "--ppo.steps=4", "--checkpoint.every_steps=0"]  # no scheduled checkpoint: only the preemption's
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_dist.cli", "ppo", "configs/tiny.yaml", *overrides],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.monotonic() + 400
    while not (metrics.is_file() and '"phase": "ppo"' in metrics.read_text()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)  # during step 2 (or between steps)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, (out, err[-3000:])
    assert "SIGTERM" in err and "--resume auto" in err and "Traceback" not in err
    done = json.loads(next((tmp_path / "checkpoints").glob("step_*/driver_state.json")).read_text())["step"]
    assert 1 <= done < 4
    resumed = run_ppo_stage(fault_cfg(tmp_path, "checkpoint.resume=auto")).history
    assert [m["step"] for m in resumed] == list(range(done + 1, 5))
    for a, b in zip(uninterrupted[done:], resumed):
        for key in KEYS:
            assert a[key] == pytest.approx(b[key], abs=1e-5), (a["step"], key)


def test_bare_resume_without_a_checkpoint_is_an_error_and_writes_nothing(tmp_path, capsys):
    from rlhf_dist.cli import main

    run = tmp_path / "fresh"
    assert main(["ppo", "configs/tiny.yaml", "--resume", f"--run.output_dir={run}"]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
    assert not run.exists()
