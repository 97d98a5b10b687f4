"""Held-out evaluation with real tiny transformers models, and the CLI (the experiments: test_experiments.py).

Exactly checkable: a policy evaluated against itself with one seed samples the very same responses
(common random numbers) and runs the very same forward passes, so KL is 0, the perplexities are
equal, every judge comparison is a tie (win rate exactly 0.5) and both RM rewards are equal.
"""

from __future__ import annotations

import json

import pytest

from rlhf_dist.cli import main
from rlhf_dist.config import load_config, with_overrides
from rlhf_dist.eval.evaluate import evaluate_policy
from rlhf_dist.tracking import read_metrics

pytestmark = pytest.mark.slow


def tiny_cfg(run_dir, *overrides):
    base = [f"run.output_dir={run_dir}", "tracking.tensorboard=false", "tracking.progress=false",
            "data.demo_size=32", "eval.num_prompts=16"]
    return load_config("configs/tiny.yaml", base + list(overrides))


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory, tiny_llama_dir):
    """A tiny reward model trained for real on the demo pairs (a few seconds)."""
    from rlhf_dist.stages.reward import train_reward_model

    run = tmp_path_factory.mktemp("rm-run")
    return train_reward_model(tiny_cfg(run, f"reward_model.path={tiny_llama_dir}", "reward.epochs=2")).model_dir


@pytest.fixture(scope="module")
def other_policy_dir(tmp_path_factory):
    from rlhf_dist.models.tiny import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama-1"), arch="llama", seed=1)


def test_policy_against_itself_is_an_exact_tie(tmp_path, tiny_llama_dir, reward_dir):
    cfg = tiny_cfg(tmp_path)
    ev = evaluate_policy(cfg, tiny_llama_dir, tiny_llama_dir, reward_dir, judge="sentiment")
    assert ev["n_prompts"] == 16
    assert abs(ev["kl"]) < 1e-4
    assert ev["perplexity_policy"] == ev["perplexity_reference"] > 1.0
    assert ev["win_rate"] == 0.5 and ev["judge_score_policy"] == ev["judge_score_start"]
    assert ev["response_length"] == ev["response_length_start"] > 0
    assert ev["reward_mean"] == ev["reward_mean_start"]
    assert 0.0 <= ev["rm_accuracy"] <= 1.0 and ev["rm_eval_pairs"] == 16  # held-out demo pairs
    assert ev["judge_is_training_reward"] is False  # tiny.yaml trains on the lowercase rule, not sentiment
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["win_rate"] == 0.5 and len(saved["examples"]) == 5
    assert saved["examples"][0]["policy"] == saved["examples"][0]["start"]
    (row,) = read_metrics(tmp_path / "metrics.jsonl", phase="eval")
    assert row["step"] == 0 and row["kl"] == ev["kl"]


def test_on_the_cluster_the_driver_holds_no_model(tmp_path, tiny_llama_dir, reward_dir, ray_cluster):
    """eval.placement cluster: generation on vLLM engines, log-probs on frozen actors, scores on reward actors
    (issue #23). The exact self-tie holds there too, and the RM's held-out accuracy equals the in-process one."""
    import ray

    here = evaluate_policy(tiny_cfg(tmp_path / "here"), tiny_llama_dir, tiny_llama_dir, reward_dir, judge="sentiment")
    cfg = tiny_cfg(tmp_path, "eval.placement=cluster")
    ev = evaluate_policy(cfg, tiny_llama_dir, tiny_llama_dir, reward_dir, judge="sentiment")
    assert abs(ev["kl"]) < 1e-4 and ev["perplexity_policy"] == ev["perplexity_reference"] > 1.0
    assert ev["win_rate"] == 0.5 and ev["response_length"] == ev["response_length_start"] > 0
    assert ev["reward_mean"] == ev["reward_mean_start"]
    assert ev["rm_accuracy"] == here["rm_accuracy"] and ev["rm_eval_pairs"] == here["rm_eval_pairs"] == 16
    for name in ("eval-rollout-policy", "eval-rollout-start", "eval-policy", "eval-reference", "eval-reward"):
        assert (tmp_path / "logs" / f"{name}-0.log").is_file(), name
    assert {pg["state"] for pg in ray.util.placement_group_table().values()} <= {"REMOVED"}


def test_pairs_for_people_sampled_and_ranked_on_the_cluster_equal_the_in_process_ones(tmp_path, tiny_llama_dir,
                                                                                      reward_dir, ray_cluster):
    """eval.placement cluster: `feedback generate` / pipeline rounds sample on a rollout engine actor and rank with
    feedback.selection on reward actors (issue #23), no model in the driver; one engine draws exactly the pairs an
    engine in this process draws with that seed, and the reward actors give the in-process ranks."""
    import ray

    from rlhf_dist.data.records import ABFeedback
    from rlhf_dist.driver.sampling import pair_sampler, pair_scorer
    from rlhf_dist.feedback.generate import sample_pairs
    from rlhf_dist.feedback.selection import selection_ranks

    prompts = [f"Tell me about the number {i}." for i in range(10)]
    here_cfg = tiny_cfg(tmp_path / "here")
    assert pair_sampler(here_cfg) is None and pair_scorer(here_cfg) is None  # CPU + placement auto: in-process
    here = sample_pairs(here_cfg, tiny_llama_dir, prompts, seed=7)
    cfg = tiny_cfg(tmp_path / "cluster", "eval.placement=cluster")
    there = sample_pairs(cfg, tiny_llama_dir, prompts, seed=7, sampler=pair_sampler(cfg))
    assert [(p.response_a, p.response_b) for p in there] == [(p.response_a, p.response_b) for p in here]
    assert any(p.response_a != p.response_b for p in there)  # two samples, not one twice
    for a, b in zip(there, here):
        assert a.logprobs_a == pytest.approx(b.logprobs_a, abs=1e-5) and a.source_a == b.source_a
    labelled = [ABFeedback(prompt=p.prompt, response_a=p.response_a, response_b=p.response_b, preference=i % 2)
                for i, p in enumerate(here)]
    for strategy in ("uncertainty", "disagreement"):
        ranks = [selection_ranks(with_overrides(c, {"feedback.selection": strategy}), there, reward_dir, labelled,
                                 pair_scorer(c)) for c in (here_cfg, cfg)]
        assert ranks[1] == pytest.approx(ranks[0], abs=1e-5) and len(set(ranks[0])) > 1, strategy
    logs = tmp_path / "cluster" / "logs"
    assert (logs / "feedback-rollout-0.log").is_file() and (logs / "feedback-reward-0.log").is_file()
    assert not (logs / "vllm-driver.log").exists()  # no engine in the driver
    assert (tmp_path / "here" / "logs" / "vllm-driver.log").is_file()
    assert {pg["state"] for pg in ray.util.placement_group_table().values()} <= {"REMOVED"}


def test_other_policy_has_positive_kl_and_no_rm_figures_without_rm(tmp_path, tiny_llama_dir, other_policy_dir):
    cfg = tiny_cfg(tmp_path)
    ev = evaluate_policy(cfg, other_policy_dir, tiny_llama_dir, None, judge="lowercase")
    assert ev["kl"] > 0.01
    assert ev["perplexity_policy"] != ev["perplexity_reference"]
    assert 0.0 <= ev["win_rate"] <= 1.0
    assert "reward_mean" not in ev and "rm_accuracy" not in ev
    assert ev["judge_is_training_reward"] is True  # flagged: tiny.yaml's PPO reward is this rule
    prompts = ["How was the ski lodge?", "Tell a friend about the jazz club."]
    ev = evaluate_policy(cfg, other_policy_dir, tiny_llama_dir, None, judge="length", prompts=prompts)
    assert ev["n_prompts"] == 2


def test_cli_eval_then_report(tmp_path, tiny_llama_dir, reward_dir, capsys):
    args = ["--config", "configs/tiny.yaml", f"--run.output_dir={tmp_path}", "--tracking.tensorboard=false",
            "--tracking.progress=false", "--data.demo_size=32", "--eval.num_prompts=4", "--eval.judge=length"]
    assert main(["eval", *args, "--policy", str(tiny_llama_dir), "--reference", str(tiny_llama_dir),
                 "--reward-model", str(reward_dir)]) == 0
    out = capsys.readouterr().out
    assert '"win_rate": 0.5' in out and "report written to" in out
    assert (tmp_path / "report" / "eval.png").is_file()
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| win rate vs start | 0.5 |  |" in md and "judge 'length'" in md
    assert main(["report", "--run-dir", str(tmp_path)]) == 0
    assert main(["eval", *args]) == 1  # no <run>/policy yet: a clear message, no traceback
    assert "no policy at" in capsys.readouterr().err
