"""Run report: PNG plots of the training curves plus a short Markdown/HTML summary (`rlhf-dist report`).

    write_report("runs/tiny")  ->  runs/tiny/report/{*.png, report.md, report.html}
    write_report("s3://bucket/runs/tiny")  ->  inputs fetched to its staging dir, report/ written there and sent back

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

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rlhf_dist.storage import fetch_run, is_uri, push_outputs, remote_of
from rlhf_dist.tracking import read_metrics

Series = tuple[str, str, str]  # (phase, metric key, legend label)
Panel = tuple[str, str, list[Series]]  # (title, y-axis label with its unit, series)
# x axis of each phase's rows: what their "step" counts
X_LABEL = {"rm/train": "reward-model optimizer step", "rm/eval": "reward-model optimizer step",
           "sft/train": "SFT optimizer step", "sft/eval": "SFT optimizer step", "ppo": "PPO step", "eval": "PPO step"}
# A panel whose metric is absent while the rest of its figure has data says so instead of vanishing.
MISSING_NOTE = {"policy/entropy": "entropy not logged\n(no policy/entropy in metrics.jsonl)"}
HELD_OUT_PANEL = "held-out eval: start vs trained policy"  # drawn from the eval rows by _plot_held_out
INPUTS = ["metrics.jsonl", "eval.json", "reward_metrics.json", "summary.json"]  # what a report reads of a run

FIGURES: dict[str, list[Panel]] = {
    "rm_loss_accuracy.png": [
        ("reward model: Bradley-Terry loss", "loss (nats per pair)", [("rm/train", "loss", "train")]),
        ("reward model: accuracy", "accuracy (fraction of pairs)",
         [("rm/train", "accuracy", "train batch"), ("rm/eval", "accuracy", "validation pairs")]),
    ],
    "sft_loss.png": [
        ("SFT: loss", "cross-entropy (nats per token)", [("sft/train", "loss", "train")]),
        ("SFT: held-out perplexity", "perplexity (per token)", [("sft/eval", "perplexity", "held-out")]),
    ],
    "ppo_reward.png": [
        ("PPO: mean reward", "reward (RM score per sequence)",
         [("ppo", "reward/score_raw", "raw score"), ("ppo", "reward/score", "clipped/normalised")]),
        (HELD_OUT_PANEL, "", []),
    ],
    "ppo_kl.png": [
        ("PPO: KL to reference (sequence, k1)", "KL (nats per sequence)", [("ppo", "kl/seq_k1", "KL")]),
        ("PPO: KL coefficient", "coefficient (reward per nat)", [("ppo", "kl/coef", "coef")]),
    ],
    "ppo_losses.png": [
        ("PPO: policy loss", "clipped surrogate loss (advantage units)", [("ppo", "policy/loss", "policy loss")]),
        ("PPO: value loss", "value loss (squared return units)", [("ppo", "critic/loss", "value loss")]),
        ("PPO: clip fraction", "fraction of tokens clipped", [("ppo", "policy/clipfrac", "clipfrac")]),
        ("critic: explained variance", "explained variance (1 = perfect)",
         [("ppo", "critic/explained_variance", "explained variance")]),
    ],
    "ppo_entropy_length.png": [
        ("PPO: policy entropy", "entropy (nats per token)", [("ppo", "policy/entropy", "entropy")]),
        ("PPO: response length", "response length (tokens)", [("ppo", "response/length", "length")]),
    ],
}
# One name per metric: the RM stage's validation accuracy (in feedback rounds a held-out fifth of the
# feedback) is not the eval's accuracy on data.eval_pairs_path / the built-in eval pairs.
RM_VALIDATION_NAME = "RM accuracy on its held-out validation pairs"
RM_EVAL_PAIRS_NAME = "RM accuracy on eval pairs (data.eval_pairs_path, else built-in)"
# summary.json keys shown by name (a pipeline's summary.json carries the run's own in "metric_names")
SUMMARY_NAMES = {"rm_accuracy": RM_VALIDATION_NAME, "rm_eval_pairs": "RM validation pairs (count)",
                 "rm_accuracy_eval_pairs": RM_EVAL_PAIRS_NAME, "win_rate": "win rate vs start (held-out prompts)",
                 "kl": "KL to reference (nats per sequence, held-out prompts)", "wall_seconds": "wall time (s)"}
# (label, phase, key) of the "final figures" table: the last logged value of each
FINAL_ROWS = [
    (RM_VALIDATION_NAME, "rm/eval", "accuracy"), ("reward model Kendall's tau", "rm/eval", "kendall_tau"),
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
    (RM_EVAL_PAIRS_NAME, "rm_accuracy", None),
]


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


def _new_figure(rows: int, cols: int, width: float, height: float) -> tuple[Figure, Any]:
    """A Figure on its own Agg canvas: no pyplot, no global backend switched (safe in notebooks and workers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(width * cols, height * rows))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def fill_panels(panels: list[Panel], records: list[dict]) -> list[tuple[str, str, list, str | None]]:
    """(title, y label, [(label, phase, xs, ys)], note) of each panel to draw; panels (and series) without data
    are left out, except those MISSING_NOTE names: they carry a note saying what was not logged."""
    filled = []
    for title, ylabel, series in panels:
        if title == HELD_OUT_PANEL:
            if [r for r in records if r.get("phase") == "eval"]:
                filled.append((title, ylabel, series, None))
            continue
        lines = [(label, phase, *_points(records, phase, key)) for phase, key, label in series]
        lines = [line for line in lines if line[2]]
        if lines:
            filled.append((title, ylabel, lines, None))
        elif series[0][1] in MISSING_NOTE:
            filled.append((title, ylabel, [], MISSING_NOTE[series[0][1]]))
    return filled


def _plot_figure(path: Path, panels: list[Panel], records: list[dict]) -> Path | None:
    """One row of line panels (fill_panels decides which)."""
    filled = fill_panels(panels, records)
    if not any(lines or title == HELD_OUT_PANEL for title, _, lines, _ in filled):
        return None
    cols = len(filled) if len(filled) <= 3 else 2  # 4 panels: a 2x2 grid stays readable
    rows = math.ceil(len(filled) / cols)
    fig, axes = _new_figure(rows, cols, 5.2, 3.6)
    for ax in list(axes.flat)[len(filled):]:
        ax.set_visible(False)
    for ax, (title, ylabel, lines, note) in zip(axes.flat, filled):
        ax.set_title(title, fontsize=10)
        if title == HELD_OUT_PANEL:
            _plot_held_out(ax, records)
            continue
        if note:
            ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=10, color="#b00020", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        for label, _, xs, ys in lines:
            ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, label=label)
        ax.set_xlabel(X_LABEL.get(lines[0][1], "step"))
        ax.set_ylabel(ylabel, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _plot_held_out(ax: Any, records: list[dict]) -> None:
    """The held-out eval's RM reward (else judge score) of the starting policy (step 0) and of the policy at
    each evaluated PPO step, values written on the points: a comparison, not a lone dot."""
    evals = [r for r in records if r.get("phase") == "eval"]
    key, start_key, ylabel = "reward_mean", "reward_mean_start", "held-out reward (RM score per sequence)"
    if not any(isinstance(r.get(key), (int, float)) for r in evals):
        judge = evals[-1].get("judge", "?")
        key, start_key, ylabel = "judge_score_policy", "judge_score_start", f"held-out judge score ({judge})"
    evals = [r for r in evals if isinstance(r.get(key), (int, float))]
    start = next((r[start_key] for r in evals if isinstance(r.get(start_key), (int, float))), None)
    xs = ([0] if start is not None else []) + [r.get("step", i + 1) for i, r in enumerate(evals)]
    ys = ([start] if start is not None else []) + [r[key] for r in evals]
    if not ys:
        ax.text(0.5, 0.5, "no held-out score logged", ha="center", va="center", transform=ax.transAxes)
        return
    colors = (["#9e9e9e"] if start is not None else []) + ["#1f77b4"] * len(evals)
    ax.plot(xs, ys, color="#1f77b4", linestyle="--", linewidth=1)
    ax.scatter(xs, ys, c=colors, s=40, zorder=3)
    for i, (x, y) in enumerate(zip(xs, ys)):
        name = "start" if start is not None and i == 0 else "trained"
        ax.annotate(f"{name}\n{y:.3g}", (x, y), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8)
    win = evals[-1].get("win_rate") if evals else None
    if isinstance(win, (int, float)):
        ax.text(0.02, 0.04, f"win rate vs start {win:.3f} (judge: {evals[-1].get('judge', '?')})",
                transform=ax.transAxes, fontsize=8)
    ax.margins(x=0.15, y=0.3)
    ax.set_xlabel("PPO step (0 = starting policy)")
    ax.set_ylabel(ylabel, fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def _plot_eval(path: Path, ev: dict) -> Path | None:
    """Bars of policy vs starting policy: judge score, RM reward, and the win rate against 0.5."""
    pairs = [(f"judge score ({ev.get('judge', '?')})", "judge score (mean per response)", "judge_score_policy",
              "judge_score_start"),
             ("RM reward", "reward (RM score per sequence)", "reward_mean", "reward_mean_start")]
    panels = [(t, y, ev[a], ev[b]) for t, y, a, b in pairs if isinstance(ev.get(a), (int, float)) and b in ev]
    has_win = isinstance(ev.get("win_rate"), (int, float))
    if not panels and not has_win:
        return None
    fig, axes = _new_figure(1, len(panels) + has_win, 4.2, 3.6)
    for ax, (title, ylabel, policy, start) in zip(axes[0], panels):
        bars = ax.bar(["start", "policy"], [start, policy], color=["#9e9e9e", "#1f77b4"])
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_xlabel("model")
        ax.axhline(0, color="black", linewidth=0.6)
    if has_win:
        ax = axes[0][-1]
        bars = ax.bar(["policy vs start"], [ev["win_rate"]], color="#2ca02c", width=0.5)
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
        ax.axhline(0.5, color="black", linestyle="--", linewidth=0.8, label="tie (0.5)")
        ax.set_ylim(0, 1)
        ax.set_xlim(-0.8, 0.8)
        ax.set_title("held-out win rate", fontsize=10)
        ax.set_ylabel("win rate (fraction, ties count 0.5)", fontsize=9)
        ax.set_xlabel("comparison")
        ax.legend(fontsize=8)
    fig.suptitle(f"held-out eval on {ev.get('n_prompts', '?')} prompts", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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
        if label == RM_VALIDATION_NAME and "rm_accuracy" in summary:
            continue  # the summary's figure (the last round's RM) under the same name, shown below
        _, ys = _points(records, phase, key)
        if ys:
            final.append([label, _fmt(ys[-1])])
    if not _points(records, "rm/eval", "accuracy")[1] and rm.get("history"):
        # no rm/eval rows in metrics.jsonl (e.g. tracking.jsonl off): reward_metrics.json has them
        final.insert(0, [RM_VALIDATION_NAME, _fmt(rm["history"][-1].get("accuracy"))])
    # summary.json's headline numbers only (it may also hold paths and nested dicts), by their own names
    names = {**SUMMARY_NAMES, **summary.get("metric_names", {})}
    final += [[f"{names[k]} (summary.json {k})" if k in names else f"summary: {k}", _fmt(v)] for k, v in summary.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)]
    tables = [("Final figures", [["metric", "value"]] + final)] if final else []
    rows = [[label, _fmt(ev[a]), _fmt(ev[b]) if b and b in ev else ""] for label, a, b in EVAL_ROWS if a in ev]
    if rows:
        tables.append((f"Held-out evaluation ({ev.get('n_prompts', '?')} prompts, judge "
                       f"'{ev.get('judge', '?')}')", [["metric", "policy", "start"]] + rows))
    return tables


def _name(where: str) -> str:
    return where.split("?")[0].rstrip("/").rsplit("/", 1)[-1]


def _markdown(where: str, tables, images: list[Path], examples: list[dict]) -> str:
    out = [f"# Run report: {_name(where)}", "", f"Run directory: `{where}`", ""]
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


def _html(where: str, tables, images: list[Path], examples: list[dict]) -> str:
    esc = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(_name(where))} report</title>",
           "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:4px 8px}img{max-width:100%;margin:8px 0}</style></head><body>",
           f"<h1>Run report: {esc(_name(where))}</h1><p>Run directory: <code>{esc(where)}</code></p>"]
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
    """Write <run>/report/ (PNGs, report.md, report.html) from what the run left on disk; returns that dir.

    A storage URI: its INPUTS come down to the run's staging dir (storage.fetch_run; StorageError when there is
    no run), the report is written there (the dir returned) and sent back to <URI>/report."""
    fetched = is_uri(str(run_dir))
    run_dir = fetch_run(str(run_dir), INPUTS) if fetched else Path(run_dir)
    found = remote_of(run_dir)  # a staged run (fetched, or a pipeline's): the report names its URI
    where = "/".join(part for part in found if part) if found else str(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
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
    (out / "report.md").write_text(_markdown(where, tables, images, examples))
    (out / "report.html").write_text(_html(where, tables, images, examples))
    if fetched:
        push_outputs(run_dir)
    return out
