"""The run report from a synthetic metrics.jsonl: every plot and the summary, and partial runs."""

from __future__ import annotations

import json
import math

import subprocess
import sys

from rlhf_dist.eval.report import FIGURES, HELD_OUT_PANEL, RM_EVAL_PAIRS_NAME, RM_VALIDATION_NAME, fill_panels, \
    write_report
from rlhf_dist.tracking import read_metrics

ALL_PNGS = {"rm_loss_accuracy.png", "ppo_reward.png", "ppo_kl.png", "ppo_losses.png", "ppo_entropy_length.png",
            "eval.png"}


def write_metrics(run_dir, ppo_steps=12, with_entropy=True, with_rm=True):
    rows = []
    if with_rm:
        for s in range(1, 9):
            rows.append({"phase": "rm/train", "step": s, "loss": 0.7 / s, "accuracy": 0.5 + s / 20, "lr": 1e-3})
        rows.append({"phase": "rm/eval", "step": 8, "epoch": 1, "accuracy": 0.875, "kendall_tau": 0.75})
    for s in range(1, ppo_steps + 1):
        row = {"phase": "ppo", "step": s, "reward/score_raw": 0.1 * s, "reward/score": 0.1 * s,
               "kl/seq_k1": 0.05 * s, "kl/coef": 0.05, "response/length": 8.0 - s / 10,
               "policy/loss": -0.01 * s, "policy/clipfrac": 0.1, "critic/loss": 1.0 / s,
               "critic/explained_variance": 1 - 1 / s, "time/step": 1.5}
        if with_entropy:
            row["policy/entropy"] = 5.0 - 0.1 * s
        rows.append(row)
    rows.append({"phase": "eval", "step": ppo_steps, "reward_mean": 0.42, "judge_score_policy": 0.3,
                 "judge": "sentiment"})
    with open(run_dir / "metrics.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps({"time": 0.0, **r}) + "\n")
        f.write('{"time": 0.0, "phase": "ppo", "st')  # a torn last line (killed mid-write) is skipped


def write_eval(run_dir):
    ev = {"n_prompts": 16, "judge": "sentiment", "judge_score_policy": 0.3, "judge_score_start": 0.1,
          "win_rate": 0.6875, "reward_mean": 0.42, "reward_mean_start": -0.2, "kl": 1.2345,
          "perplexity_policy": 12.5, "perplexity_reference": 30.25, "response_length": 7.5,
          "response_length_start": 8.0, "rm_accuracy": 0.9375,
          "examples": [{"prompt": "How was the ski lodge?", "policy": "great | fun", "start": "xq"}]}
    (run_dir / "eval.json").write_text(json.dumps(ev))


def test_full_report_has_every_plot_and_the_final_figures(tmp_path):
    write_metrics(tmp_path)
    write_eval(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"wall_seconds": 93.5, "eval": {"kl": 1.0}, "policy_dir": "x"}))
    out = write_report(tmp_path)
    assert out == tmp_path / "report"
    assert {p.name for p in out.glob("*.png")} == ALL_PNGS
    assert all(p.stat().st_size > 5_000 for p in out.glob("*.png"))
    md = (out / "report.md").read_text()
    # final PPO figures (last step), RM held-out accuracy, eval comparison, summary.json entries
    for text in ("| PPO mean reward (raw) | 1.2 |", "| PPO KL to reference | 0.6 |", "| PPO steps | 12 |",
                 f"| {RM_VALIDATION_NAME} | 0.875 |", "| win rate vs start | 0.6875 |  |",
                 "| judge score | 0.3 | 0.1 |", "| perplexity (of the policy's responses) | 12.5 | 30.25 |",
                 "| KL to reference | 1.234 |", "| wall time (s) (summary.json wall_seconds) | 93.5 |",
                 f"| {RM_EVAL_PAIRS_NAME} | 0.9375 |  |", "policy: 'great | fun'"):
        assert text in md, text
    for png in ALL_PNGS:
        assert f"]({png})" in md
    assert "summary: eval" not in md and "summary: policy_dir" not in md  # numbers only from summary.json
    page = (out / "report.html").read_text()
    assert "<img src='ppo_kl.png'" in page and "<td>0.6875</td>" in page and "&#x27;great | fun&#x27;" in page


def test_missing_metrics_skip_their_panels_without_crashing(tmp_path):
    write_metrics(tmp_path, with_entropy=False, with_rm=False)
    out = write_report(tmp_path)
    names = {p.name for p in out.glob("*.png")}
    # no RM rows, no eval.json but an eval row in metrics.jsonl (no start scores: no bars, no win rate)
    assert "rm_loss_accuracy.png" not in names and "eval.png" not in names
    assert {"ppo_reward.png", "ppo_kl.png", "ppo_losses.png", "ppo_entropy_length.png"} <= names  # length only
    md = (out / "report.md").read_text()
    assert "PPO policy entropy" not in md and "reward model" not in md


def test_empty_run_dir_gives_an_empty_report(tmp_path):
    out = write_report(tmp_path)
    assert not list(out.glob("*.png"))
    assert (out / "report.md").read_text().startswith("# Run report")


def test_rm_only_run_uses_reward_metrics_json_when_jsonl_is_off(tmp_path):
    hist = [{"epoch": 1, "accuracy": 0.8125}, {"epoch": 2, "accuracy": math.pi / 4}]
    (tmp_path / "reward_metrics.json").write_text(json.dumps({"history": hist}))
    md = (write_report(tmp_path) / "report.md").read_text()
    assert f"| {RM_VALIDATION_NAME} | 0.7854 |" in md


def test_every_panel_names_its_y_axis_with_a_unit():
    for name, panels in FIGURES.items():
        for title, ylabel, _ in panels:
            assert title == HELD_OUT_PANEL or "(" in ylabel or "fraction" in ylabel, (name, title, ylabel)


def test_entropy_panel_says_not_logged_instead_of_vanishing(tmp_path):
    write_metrics(tmp_path, with_entropy=False)
    filled = fill_panels(FIGURES["ppo_entropy_length.png"], read_metrics(tmp_path / "metrics.jsonl"))
    assert [(title, note) for title, _, _, note in filled] == [
        ("PPO: policy entropy", "entropy not logged\n(no policy/entropy in metrics.jsonl)"),
        ("PPO: response length", None)]
    write_metrics(tmp_path, with_entropy=True)
    filled = fill_panels(FIGURES["ppo_entropy_length.png"], read_metrics(tmp_path / "metrics.jsonl"))
    assert filled[0][3] is None and len(filled[0][2][0][3]) == 12  # 12 entropy points


def test_held_out_panel_compares_start_and_trained(tmp_path):
    write_metrics(tmp_path)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [p[0] for p in fill_panels(FIGURES["ppo_reward.png"], rows)] == ["PPO: mean reward", HELD_OUT_PANEL]
    no_eval = [r for r in rows if r.get("phase") != "eval"]
    assert [p[0] for p in fill_panels(FIGURES["ppo_reward.png"], no_eval)] == ["PPO: mean reward"]


def test_summary_names_the_two_rm_accuracies_apart(tmp_path):
    write_eval(tmp_path)
    names = {"rm_accuracy": "RM accuracy on held-out feedback pairs"}
    (tmp_path / "summary.json").write_text(json.dumps({"rm_accuracy": 0.85, "rm_accuracy_eval_pairs": 1.0,
                                                       "metric_names": names}))
    md = (write_report(tmp_path) / "report.md").read_text()
    assert "| RM accuracy on held-out feedback pairs (summary.json rm_accuracy) | 0.85 |" in md
    assert f"| {RM_EVAL_PAIRS_NAME} (summary.json rm_accuracy_eval_pairs) | 1 |" in md
    assert "held-out accuracy |" not in md


def test_report_does_not_switch_the_matplotlib_backend(tmp_path):
    """Importing and running the report leaves pyplot unimported and the user's backend alone."""
    code = ("import matplotlib, sys; matplotlib.use('svg'); from rlhf_dist.eval import report; "
            f"report.write_report({str(tmp_path)!r}); "
            "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); "
            "assert 'matplotlib.pyplot' not in sys.modules")
    write_metrics(tmp_path)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert (tmp_path / "report" / "ppo_reward.png").stat().st_size > 5_000


def test_pipeline_names_the_two_rm_accuracies_by_their_pairs():
    from rlhf_dist.stages.demo import demo_config
    from rlhf_dist.stages.pipeline import metric_names

    names = metric_names(demo_config())
    assert names["rm_accuracy"] == "RM accuracy on held-out feedback pairs"
    assert names["rm_accuracy_eval_pairs"] == "RM accuracy on built-in eval pairs"
