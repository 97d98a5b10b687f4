"""Seed experiment 3: a multi-objective reward, 0.7 R_helpful + 0.3 R_concise.

    rlhf-dist experiment multi-objective  # -> <out>/multi_objective.{json,png}

Three PPO arms from the same start, same settings, changing only ppo.rewards (weighted sources are
summed by the driver, rlhf_dist.driver.rewards.combine_rewards):
    helpful      R_helpful alone
    concise      R_concise alone (rlhf_dist.eval.rules:concise_reward, 1 - characters/300, floor 0)
    combined     0.7 R_helpful + 0.3 R_concise
R_helpful is the rule stand-in rlhf_dist.eval.rules:helpful_reward (the demo's positivity lexicon) by
default, or the trained reward model with --helpful model. Each final policy is judged on held-out
prompts by rlhf_dist.eval.rules:helpfulness_judge, a rule no arm trains on, and its length measured.
The claim: the combination stays helpful while avoiding the verbosity of R_helpful alone.
"""

from __future__ import annotations

from pathlib import Path

from rlhf_dist.config import RLHFConfig
from rlhf_dist.eval.experiments.common import (
    HELPFULNESS_JUDGE, arm_config, curves, function_source, new_figure, provenance, run_arm, save_figure,
)
from rlhf_dist.utils import write_json

HELPFUL_RULE = "rlhf_dist.eval.rules:helpful_reward"
CONCISE_REWARD = "rlhf_dist.eval.rules:concise_reward"
WEIGHTS = (0.7, 0.3)  # (helpful, concise) in the combined arm, as in the seed


def helpful_source(helpful: str, weight: float = 1.0) -> dict:
    """'model': the trained reward model (reward_model.path, trained first when it holds none); else a function."""
    return {"kind": "model", "weight": weight} if helpful == "model" else function_source(helpful, weight)


def arms(helpful: str) -> dict[str, list[dict]]:
    return {"helpful": [helpful_source(helpful)], "concise": [function_source(CONCISE_REWARD)],
            "combined": [helpful_source(helpful, WEIGHTS[0]), function_source(CONCISE_REWARD, WEIGHTS[1])]}


def _summary(arm: dict) -> dict:
    ev = arm["eval"]
    return {"helpfulness": ev["judge_score_policy"], "helpfulness_start": ev["judge_score_start"],
            "win_rate_vs_start": ev["win_rate"], "response_length": ev["response_length"],
            "response_length_start": ev["response_length_start"], "kl": ev["kl"],
            "run_dir": arm["run_dir"], "curves": curves(arm["history"]), "examples": arm["examples"],
            "settings": arm["settings"]}


def plot_multi_objective(policies: dict[str, dict], path: Path) -> Path:
    fig, (ax_h, ax_len) = new_figure(2, "multi-objective reward: held-out helpfulness and length")
    names = ["start", *policies]
    first = next(iter(policies.values()))
    helpfulness = [first["helpfulness_start"], *(p["helpfulness"] for p in policies.values())]
    length = [first["response_length_start"], *(p["response_length"] for p in policies.values())]
    colors = [f"C{i}" for i in range(len(names))]
    ax_h.bar(names, helpfulness, color=colors)
    ax_h.set_ylabel("held-out helpfulness judge (score in [0, 1])")
    ax_h.set_ylim(0, 1.05)
    ax_len.bar(names, length, color=colors)
    ax_len.set_ylabel("mean response length (tokens)")
    for ax in (ax_h, ax_len):
        ax.set_xlabel("policy (trained on)")
        ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def multi_objective_experiment(cfg: RLHFConfig, out_dir: str | Path, helpful: str = HELPFUL_RULE,
                               runs_dir: str | Path | None = None, command: str | None = None) -> Path:
    """PPO on R_helpful, R_concise and their 0.7/0.3 sum; writes <out_dir>/multi_objective.{json,png}."""
    out = Path(out_dir)
    runs_root = Path(runs_dir) if runs_dir else Path(cfg.run.output_dir) / "multi_objective"
    policies = {name: _summary(run_arm(arm_config(cfg, runs_root / name, name, rewards)))
                for name, rewards in arms(helpful).items()}
    plot_multi_objective(policies, out / "multi_objective.png")
    write_json(out / "multi_objective.json", {
        "experiment": "multi_objective", "judge": HELPFULNESS_JUDGE,
        "rewards": {"helpful": helpful if helpful != "model" else f"trained reward model ({cfg.reward_model.path})",
                    "concise": CONCISE_REWARD, "combined_weights": {"helpful": WEIGHTS[0], "concise": WEIGHTS[1]}},
        "policies": policies, "steps": cfg.ppo.steps, "reproduce": provenance(cfg, command),
        "units": {"helpfulness": "judge score in [0, 1]", "response_length": "tokens", "kl": "nats per sequence"},
    })
    return out
