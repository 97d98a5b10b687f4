"""Seed experiment 004: reward hacking with a length reward, with and without the KL penalty.

    rlhf-dist experiment kl-sweep --config configs/tiny.yaml --coefs 0,0.001,0.02,0.5

One PPO run per KL coefficient, each rewarded ONLY by response length
(rlhf_dist.eval.rules:length_reward), into <out>/kl_<coef>/ (each with its own report).
kl 0 is the run without the KL penalty. The curves of all runs share one figure,
<out>/kl_sweep.png (mean reward and KL to the reference vs step), and <out>/kl_sweep.json
holds the per-step curves plus the final reward / KL per coefficient.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rlhf_dist.config import RLHFConfig, build_config
from rlhf_dist.eval.report import write_report
from rlhf_dist.utils import write_json

log = logging.getLogger(__name__)
LENGTH_REWARD = "rlhf_dist.eval.rules:length_reward"


def sweep_config(cfg: RLHFConfig, run_dir: Path, coef: float) -> RLHFConfig:
    """`cfg` with the length reward as the only reward source and a fixed KL coefficient `coef`."""
    data = cfg.model_dump(mode="json")
    data["run"].update(output_dir=str(run_dir), name=f"{cfg.run.name}-kl{coef:g}")
    data["ppo"]["kl"].update(coef=coef, controller="fixed")
    data["ppo"]["rewards"] = [{"kind": "function", "function": LENGTH_REWARD}]
    return build_config(data, source=f"kl-sweep (kl {coef:g})")  # re-validated: cross-field rules included


def _curves(coef: float, run_dir: Path, history: list[dict]) -> dict:
    steps = [m["step"] for m in history]
    reward, kl = [m["reward/score_raw"] for m in history], [m["kl/seq_k1"] for m in history]
    return {
        "kl_coef": coef, "run_dir": str(run_dir), "steps": steps, "reward": reward, "kl": kl,
        "response_length": [m["response/length"] for m in history],
        "final_reward": reward[-1] if reward else None, "final_kl": kl[-1] if kl else None,
        "max_kl": max(kl) if kl else None,
    }


def plot_kl_sweep(runs: list[dict], path: Path) -> Path:
    """Mean reward and KL vs step, one line per coefficient, on one two-panel figure."""
    fig = Figure(figsize=(11, 4))  # no pyplot: no global backend or figure registry is touched
    ax_r, ax_kl = fig.subplots(1, 2)
    for run in runs:
        label = f"kl {run['kl_coef']:g}" + (" (no penalty)" if run["kl_coef"] == 0 else "")
        marker = "o" if len(run["steps"]) <= 30 else None
        ax_r.plot(run["steps"], run["reward"], marker=marker, markersize=3, label=label)
        ax_kl.plot(run["steps"], run["kl"], marker=marker, markersize=3, label=label)
    ax_r.set_title("mean reward (response length / 100)", fontsize=10)
    ax_r.set_ylabel("reward (characters / 100)")
    ax_kl.set_title("KL to reference (sequence, k1)", fontsize=10)
    ax_kl.set_ylabel("KL (nats / sequence)")
    for ax in (ax_r, ax_kl):
        ax.set_xlabel("PPO step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("reward hacking: length reward vs KL coefficient", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def reward_hacking_experiment(cfg: RLHFConfig, out_dir: str | Path,
                              kl_coefs: Sequence[float] = (0.0, 0.001, 0.02, 0.5)) -> Path:
    """Run the length-reward PPO once per KL coefficient; returns `out_dir` (kl_sweep.png/.json inside)."""
    from rlhf_dist.stages.ppo import run_ppo_stage  # Ray + engines: only when the experiment runs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for coef in kl_coefs:
        run_dir = out / f"kl_{coef:g}"
        log.info("kl-sweep: PPO with the length reward, kl coef %g -> %s", coef, run_dir)
        result = run_ppo_stage(sweep_config(cfg, run_dir, coef))
        write_report(run_dir)
        runs.append(_curves(coef, run_dir, result.history))
    plot_kl_sweep(runs, out / "kl_sweep.png")
    write_json(out / "kl_sweep.json", {"reward": LENGTH_REWARD, "steps": cfg.ppo.steps, "runs": runs})
    return out
