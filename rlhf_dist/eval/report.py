"""Run report: PNG plots of the training curves plus a short Markdown/HTML summary (`rlhf-dist report`).

    write_report("runs/tiny")  ->  runs/tiny/report/{*.png, report.md, report.html}

Reads <run>/metrics.jsonl (phases rm/train, rm/eval, sft/train, ppo, eval) and, when present,
eval.json, reward_metrics.json and summary.json. A panel whose metrics are absent is skipped,
and a figure with no panel left is not written, so a partial run still gets a report.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed (servers, CI, Ray workers)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

Series = tuple[str, str, str]  # (phase, metric key, legend label)
Panel = tuple[str, list[Series]]  # (title, series)

FIGURES: dict[str, list[Panel]] = {
    "rm_loss_accuracy.png": [
        ("reward model: Bradley-Terry loss", [("rm/train", "loss", "train")]),
        ("reward model: accuracy", [("rm/train", "accuracy", "train batch"), ("rm/eval", "accuracy", "held-out")]),
    ],
    "sft_loss.png": [("SFT: loss", [("sft/train", "loss", "train"), ("sft/eval", "loss", "held-out")])],
    "ppo_reward.png": [
        ("PPO: mean reward", [("ppo", "reward/score_raw", "raw score"), ("ppo", "reward/score", "clipped/normalised")]),
        ("held-out eval", [("eval", "reward_mean", "RM reward"), ("eval", "judge_score_policy", "judge score")]),
    ],
    "ppo_kl.png": [
        ("PPO: KL to reference (sequence, k1)", [("ppo", "kl/seq_k1", "KL")]),
        ("PPO: KL coefficient", [("ppo", "kl/coef", "coef")]),
    ],
    "ppo_losses.png": [
        ("PPO: policy loss", [("ppo", "policy/loss", "policy loss")]),
        ("PPO: value loss", [("ppo", "critic/loss", "value loss")]),
        ("PPO: clip fraction", [("ppo", "policy/clipfrac", "clipfrac")]),
        ("critic: explained variance", [("ppo", "critic/explained_variance", "explained variance")]),
    ],
    "ppo_entropy_length.png": [
        ("PPO: policy entropy", [("ppo", "policy/entropy", "entropy")]),
        ("PPO: response length (tokens)", [("ppo", "response/length", "length")]),
    ],
}
# (label, phase, key) of the "final figures" table: the last logged value of each
FINAL_ROWS = [
    ("reward model held-out accuracy", "rm/eval", "accuracy"), ("reward model Kendall's tau", "rm/eval", "kendall_tau"),
    ("SFT final train loss", "sft/train", "loss"), ("PPO steps", "ppo", "step"),
    ("PPO mean reward (raw)", "ppo", "reward/score_raw"), ("PPO KL to reference", "ppo", "kl/seq_k1"),
    ("PPO response length", "ppo", "response/length"), ("PPO policy loss", "ppo", "policy/loss"),
    ("PPO value loss", "ppo", "critic/loss"), ("PPO policy entropy", "ppo", "policy/entropy"),
]
# (label, policy key, start key) of the eval comparison table
EVAL_ROWS = [
    ("judge score", "judge_score_policy", "judge_score_start"), ("win rate vs start", "win_rate", None),
    ("RM reward", "reward_mean", "reward_mean_start"), ("KL to reference", "kl", None),
    ("perplexity (of the policy's responses)", "perplexity_policy", "perplexity_reference"),
    ("response length (tokens)", "response_length", "response_length_start"),
    ("RM held-out pair accuracy", "rm_accuracy", None),
]


def read_records(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a torn last line (run killed mid-write) is skipped, not fatal."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _points(records: list[dict], phase: str, key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        value = r.get(key)
        if r.get("phase") == phase and isinstance(value, (int, float)) and not isinstance(value, bool):
            xs.append(r.get("step", len(xs)))
            ys.append(float(value))
    return xs, ys


def _plot_figure(path: Path, panels: list[Panel], records: list[dict]) -> Path | None:
    """One row of line panels; panels (and series) without data are left out."""
    filled = []
    for title, series in panels:
        lines = [(label, *_points(records, phase, key)) for phase, key, label in series]
        lines = [line for line in lines if line[1]]
        if lines:
            filled.append((title, lines))
    if not filled:
        return None
    cols = len(filled) if len(filled) <= 3 else 2  # 4 panels: a 2x2 grid stays readable
    rows = math.ceil(len(filled) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, filled):
        for label, xs, ys in lines:
            ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_eval(path: Path, ev: dict) -> Path | None:
    """Bars of policy vs starting policy: judge score, RM reward, and the win rate against 0.5."""
    pairs = [(f"judge score ({ev.get('judge', '?')})", "judge_score_policy", "judge_score_start"),
             ("RM reward", "reward_mean", "reward_mean_start")]
    panels = [(t, ev[a], ev[b]) for t, a, b in pairs if isinstance(ev.get(a), (int, float)) and b in ev]
    has_win = isinstance(ev.get("win_rate"), (int, float))
    if not panels and not has_win:
        return None
    fig, axes = plt.subplots(1, len(panels) + has_win, figsize=(4.2 * (len(panels) + has_win), 3.6), squeeze=False)
    for ax, (title, policy, start) in zip(axes[0], panels):
        bars = ax.bar(["start", "policy"], [start, policy], color=["#9e9e9e", "#1f77b4"])
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.axhline(0, color="black", linewidth=0.6)
    if has_win:
        ax = axes[0][-1]
        bars = ax.bar(["policy vs start"], [ev["win_rate"]], color="#2ca02c", width=0.5)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
        ax.axhline(0.5, color="black", linestyle="--", linewidth=0.8, label="tie (0.5)")
        ax.set_ylim(0, 1)
        ax.set_xlim(-0.8, 0.8)
        ax.set_title("held-out win rate", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(f"held-out eval on {ev.get('n_prompts', '?')} prompts", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 1e6):
        return str(int(value))
    return f"{value:.4g}"


def _summary_tables(records: list[dict], ev: dict, rm: dict, summary: dict) -> list[tuple[str, list[list[str]]]]:
    """(heading, rows with a header row first) for the Markdown/HTML summary."""
    final = []
    for label, phase, key in FINAL_ROWS:
        _, ys = _points(records, phase, key)
        if ys:
            final.append([label, _fmt(ys[-1])])
    if not _points(records, "rm/eval", "accuracy")[1] and rm.get("history"):
        # no rm/eval rows in metrics.jsonl (e.g. tracking.jsonl off): reward_metrics.json has them
        final.insert(0, ["reward model held-out accuracy", _fmt(rm["history"][-1].get("accuracy"))])
    # summary.json's headline numbers only (it may also hold paths and nested dicts)
    final += [[f"summary: {k}", _fmt(v)] for k, v in summary.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)]
    tables = [("Final figures", [["metric", "value"]] + final)] if final else []
    rows = [[label, _fmt(ev[a]), _fmt(ev[b]) if b and b in ev else ""] for label, a, b in EVAL_ROWS if a in ev]
    if rows:
        tables.append((f"Held-out evaluation ({ev.get('n_prompts', '?')} prompts, judge "
                       f"'{ev.get('judge', '?')}')", [["metric", "policy", "start"]] + rows))
    return tables


def _markdown(run_dir: Path, tables, images: list[Path], examples: list[dict]) -> str:
    out = [f"# Run report: {run_dir.name}", "", f"Run directory: `{run_dir}`", ""]
    for heading, rows in tables:
        out += [f"## {heading}", "", "| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows[1:]] + [""]
    if examples:
        out += ["## Example generations", ""]
        for ex in examples[:3]:
            out += [f"- **prompt**: {ex['prompt']!r}", f"  - policy: {ex['policy']!r}", f"  - start: {ex['start']!r}"]
        out.append("")
    out += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in images]
    return "\n".join(out) + "\n"


def _html(run_dir: Path, tables, images: list[Path], examples: list[dict]) -> str:
    esc = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(run_dir.name)} report</title>",
           "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:100%;margin:8px 0}</style></head><body>",
           f"<h1>Run report: {esc(run_dir.name)}</h1><p>Run directory: <code>{esc(str(run_dir))}</code></p>"]
    for heading, rows in tables:
        out.append(f"<h2>{esc(heading)}</h2><table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in rows[0]) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows[1:]]
        out.append("</table>")
    if examples:
        out.append("<h2>Example generations</h2><ul>")
        out += [f"<li><b>prompt</b>: {esc(repr(e['prompt']))}<br>policy: {esc(repr(e['policy']))}<br>"
                f"start: {esc(repr(e['start']))}</li>" for e in examples[:3]]
        out.append("</ul>")
    out.append("<h2>Plots</h2>" + "".join(f"<div><img src='{esc(p.name)}' alt='{esc(p.stem)}'></div>" for p in images))
    return "\n".join(out) + "\n</body></html>\n"


def write_report(run_dir: str | Path) -> Path:
    """Write <run>/report/ (PNGs, report.md, report.html) from what the run left on disk; returns that dir."""
    run_dir = Path(run_dir)
    records = read_records(run_dir / "metrics.jsonl")
    ev = _read_json(run_dir / "eval.json")
    if not ev:  # eval logged to metrics.jsonl only
        ev = next((r for r in reversed(records) if r.get("phase") == "eval"), {})
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.png"):  # a panel that is gone now must not linger from an earlier report
        stale.unlink()
    images = [p for name, panels in FIGURES.items() if (p := _plot_figure(out / name, panels, records))]
    if (p := _plot_eval(out / "eval.png", ev)) is not None:
        images.append(p)
    tables = _summary_tables(records, ev, _read_json(run_dir / "reward_metrics.json"),
                             _read_json(run_dir / "summary.json"))
    examples = ev.get("examples", [])
    (out / "report.md").write_text(_markdown(run_dir, tables, images, examples))
    (out / "report.html").write_text(_html(run_dir, tables, images, examples))
    return out
