"""What the seed experiments share: one PPO arm (stage entry point + held-out eval + report), provenance, plots.

An arm is one PPO run of the experiment's base config with a few settings changed (its reward sources,
its fixed KL coefficient), in its own run directory <run.output_dir>/<experiment>/<arm>. The arm's
metrics come from the PPO stage's own history; its start-vs-end generations and held-out judge scores
from `rlhf-dist eval` (evaluate_policy), so no measurement is re-implemented here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhf_dist.config import RLHFConfig, with_overrides

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)
HELPFULNESS_JUDGE = "rlhf_dist.eval.rules:helpfulness_judge"  # held out: no experiment trains on it
# Appended to the built-in prompts of the PPO arms. Asked as the demo does, SmolLM2-135M-Instruct answers
# in ~110 tokens and a 128-token cap leaves a length reward no room; asked for one sentence it answers in
# ~33 (12 held-out prompts, HF sampling at temperature 1), so the length is free to grow ~4x.
BRIEF_INSTRUCTION = " Answer in one sentence."


def function_source(spec: str, weight: float = 1.0) -> dict:
    return {"kind": "function", "function": spec, "weight": weight}


def brief_prompt_files(cfg: RLHFConfig, run_dir: Path) -> dict[str, str]:
    """The built-in prompts (train and held-out) with BRIEF_INSTRUCTION appended, written under
    `run_dir`/prompts; the data.* updates that point the arm at them. Nothing when the user gave prompts."""
    import json

    from rlhf_dist.data.demo import demo_prompts
    from rlhf_dist.stages.inputs import check_inputs

    # the policy and the user's prompt files checked first: a mistake writes nothing
    check_inputs(cfg, ["policy.path"], ["prompts", "eval_prompts"])
    updates: dict[str, str] = {}
    given = {"data.prompts_path": cfg.data.prompts_path, "data.eval_prompts_path": cfg.data.eval_prompts_path}
    for split, key in (("train", "data.prompts_path"), ("eval", "data.eval_prompts_path")):
        if given[key] is not None:
            continue
        path = run_dir / "prompts" / f"{split}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = demo_prompts(cfg.data.demo_size, seed=cfg.run.seed, split=split)
        path.write_text("".join(json.dumps({"prompt": r.prompt + BRIEF_INSTRUCTION}) + "\n" for r in rows))
        updates[key] = str(path)
    return updates


def arm_config(cfg: RLHFConfig, run_dir: Path, arm: str, rewards: list[dict],
               kl_coef: float | None = None) -> RLHFConfig:
    """`cfg` with only `rewards` as reward sources (and a fixed KL coefficient), writing into `run_dir`,
    on the built-in prompts asking for one sentence (brief_prompt_files) unless the user gave prompts."""
    updates: dict[str, Any] = {"run.output_dir": str(run_dir), "run.name": f"{cfg.run.name}-{arm}",
                               "ppo.rewards": rewards, **brief_prompt_files(cfg, run_dir)}
    if kl_coef is not None:
        updates.update({"ppo.kl.coef": kl_coef, "ppo.kl.controller": "fixed"})
    return with_overrides(cfg, updates, source=f"experiment arm {arm}")  # cross-field rules re-checked


def arm_settings(arm_cfg: RLHFConfig) -> dict:
    """What this arm changes in the base config (its full config is <run_dir>/config.yaml)."""
    return {"run.output_dir": arm_cfg.run.output_dir, "data.prompts_path": arm_cfg.data.prompts_path,
            "data.eval_prompts_path": arm_cfg.data.eval_prompts_path, "ppo.kl.coef": arm_cfg.ppo.kl.coef,
            "ppo.kl.controller": arm_cfg.ppo.kl.controller,
            "ppo.rewards": [s.model_dump(mode="json", exclude_defaults=True) for s in arm_cfg.ppo.rewards]}


def run_arm(arm_cfg: RLHFConfig, judge: str = HELPFULNESS_JUDGE) -> dict:
    """PPO (rlhf_dist.stages.ppo), then the held-out eval of the exported policy against the starting one."""
    from rlhf_dist.eval.evaluate import evaluate_policy
    from rlhf_dist.eval.report import write_report
    from rlhf_dist.models import resolve_model_path
    from rlhf_dist.stages.ppo import run_ppo_stage  # Ray + engines: only when an experiment runs

    run_dir = Path(arm_cfg.run.output_dir)
    log.info("experiment arm %s -> %s", arm_cfg.run.name, run_dir)
    result = run_ppo_stage(arm_cfg)
    start = resolve_model_path(arm_cfg.policy.path, seed=arm_cfg.run.seed)
    ev = evaluate_policy(arm_cfg, result.policy_dir, start, None, judge)
    write_report(run_dir)
    return {"run_dir": str(run_dir), "history": result.history, "eval": ev,
            "examples": _read_examples(run_dir), "settings": arm_settings(arm_cfg)}


def _read_examples(run_dir: Path) -> list[dict]:
    import json

    return json.loads((run_dir / "eval.json").read_text())["examples"]  # [{prompt, policy, start}]


def curves(history: list[dict]) -> dict:
    """Per-step curves of one PPO run: reward (raw), KL to the reference, response length (tokens)."""
    def col(key: str) -> list[float]:
        return [float(m[key]) for m in history]
    reward, kl, length = col("reward/score_raw"), col("kl/seq_k1"), col("response/length")
    return {"steps": [int(m["step"]) for m in history], "reward": reward, "kl": kl, "response_length": length,
            "final_reward": reward[-1], "final_kl": kl[-1], "final_response_length": length[-1],
            "max_kl": max(kl)}


def provenance(cfg: RLHFConfig, command: str | None) -> dict:
    """How to reproduce: the command line as given, and the fully resolved base config."""
    return {"command": command, "config": cfg.model_dump(mode="json")}


def new_figure(cols: int, title: str) -> tuple[Figure, list]:
    from matplotlib.figure import Figure  # plotting only when an experiment writes its figure

    fig = Figure(figsize=(4.2 * cols, 3.8))  # no pyplot: no global backend or figure registry is touched
    axes = fig.subplots(1, cols)
    fig.suptitle(title, fontsize=11)
    return fig, list(axes) if cols > 1 else [axes]


def save_figure(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)  # --out is created only once there are results
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_step_curves(runs: list[dict], label_of, path: Path, title: str, reward_label: str,
                     length_cap: int | None = None) -> Path:
    """Reward, KL and response length vs PPO step, one line per arm (and the response cap, dashed)."""
    from matplotlib.ticker import MaxNLocator

    fig, (ax_r, ax_kl, ax_len) = new_figure(3, title)
    for run in runs:
        marker = "o" if len(run["steps"]) <= 30 else None
        for ax, key in ((ax_r, "reward"), (ax_kl, "kl"), (ax_len, "response_length")):
            ax.plot(run["steps"], run[key], marker=marker, markersize=3, label=label_of(run))
    if length_cap is not None:  # a length reward pins responses here: longer ones are cut, not allowed
        ax_len.axhline(length_cap, color="grey", linestyle="--", linewidth=1, label=f"cap ({length_cap} new tokens)")
    ax_r.set_ylabel(reward_label)
    ax_kl.set_ylabel("KL to reference (nats / sequence)")
    ax_len.set_ylabel("mean response length (tokens)")
    for ax, name in ((ax_r, "mean reward"), (ax_kl, "KL to reference (k1)"), (ax_len, "response length")):
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("PPO step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)
