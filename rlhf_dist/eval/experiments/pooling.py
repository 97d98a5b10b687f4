"""Seed experiment 1: reward-model pooling, last position vs the mean over all positions.

    rlhf-dist experiment pooling          # -> <out>/pooling.{json,png}

The reward model is trained twice by the RM stage (rlhf_dist.stages.reward) on the same preference
pairs, same seed and settings, changing only reward_model.pooling ("last": the head's output at the
last real token; "mean": the mean of the head's outputs over all real tokens). Measured: the held-out
pairwise accuracy after the last epoch, with its 95% Wilson interval over the held-out pairs, and the
accuracy after every epoch.
"""

from __future__ import annotations

from pathlib import Path

from rlhf_dist.algo.metrics import wilson_interval
from rlhf_dist.config import RLHFConfig, with_overrides
from rlhf_dist.eval.experiments.common import new_figure, provenance, save_figure
from rlhf_dist.utils import write_json

POOLINGS = ("last", "mean")


def _arm(cfg: RLHFConfig, pooling: str, run_dir: Path) -> dict:
    from rlhf_dist.stages.reward import train_reward_model  # torch training: only when the experiment runs

    arm_cfg = with_overrides(cfg, {"reward_model.pooling": pooling, "run.output_dir": str(run_dir),
                                   "run.name": f"{cfg.run.name}-pooling-{pooling}"}, source=f"pooling arm {pooling}")
    history = train_reward_model(arm_cfg).history
    final = history[-1]
    n = int(final["n_pairs"])
    low, high = wilson_interval(final["accuracy"] * n, n)
    return {"accuracy": final["accuracy"], "ci": [low, high], "n_eval_pairs": n,
            "kendall_tau": final["kendall_tau"], "margin_mean": final["margin_mean"],
            "accuracy_per_epoch": [h["accuracy"] for h in history], "run_dir": str(run_dir)}


def plot_pooling(result: dict, path: Path) -> Path:
    fig, (ax_bar, ax_ep) = new_figure(2, f"reward-model pooling ({result['backbone']})")
    for i, pooling in enumerate(POOLINGS):
        arm = result[pooling]
        acc, (low, high) = arm["accuracy"], arm["ci"]
        ax_bar.bar(i, acc, yerr=[[acc - low], [high - acc]], capsize=6, color=f"C{i}", label=pooling)
        epochs = range(1, len(arm["accuracy_per_epoch"]) + 1)
        ax_ep.plot(list(epochs), arm["accuracy_per_epoch"], marker="o", color=f"C{i}", label=pooling)
    ax_bar.set_xticks(range(len(POOLINGS)), [f"{p} pooling" for p in POOLINGS])
    ax_bar.set_ylabel("held-out pairwise accuracy (fraction, 95% Wilson CI)")
    ax_bar.set_ylim(0, 1.05)
    ax_ep.set_xlabel("reward-model epoch")
    ax_ep.set_ylabel("held-out pairwise accuracy (fraction)")
    for ax in (ax_bar, ax_ep):
        ax.grid(alpha=0.3, axis="y")
    ax_ep.legend(fontsize=8)
    return save_figure(fig, path)


def pooling_experiment(cfg: RLHFConfig, out_dir: str | Path, runs_dir: str | Path | None = None,
                       command: str | None = None) -> Path:
    """Train the RM with last and with mean pooling on the same pairs; writes <out_dir>/pooling.{json,png}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs_root = Path(runs_dir) if runs_dir else Path(cfg.run.output_dir) / "pooling"
    result: dict = {"experiment": "pooling", "backbone": cfg.reward_model.path}
    for pooling in POOLINGS:
        result[pooling] = _arm(cfg, pooling, runs_root / pooling)
    result["pairs"] = {"train": cfg.data.pairs_path or f"built-in demo pairs (data.demo_size {cfg.data.demo_size})",
                       "eval": cfg.data.eval_pairs_path or "built-in held-out demo pairs",
                       "format": cfg.data.pairs_format, "n_eval": result["last"]["n_eval_pairs"]}
    result["difference_mean_minus_last"] = result["mean"]["accuracy"] - result["last"]["accuracy"]
    result["reproduce"] = provenance(cfg, command)
    plot_pooling(result, out / "pooling.png")
    write_json(out / "pooling.json", result)
    return out
