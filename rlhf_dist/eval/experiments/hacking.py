"""Seed experiments 2 and 4: reward hacking with a flawed length reward, and the KL sweep.

    rlhf-dist experiment length-hacking   # KL coef 0 and 0.1  -> <out>/length_hacking.{json,png}
    rlhf-dist experiment kl-sweep         # KL coef 0.001 / 0.02 / 0.5 -> <out>/kl_sweep.{json,png}

One PPO arm per KL coefficient (a fixed coefficient: no adaptive controller), each rewarded ONLY by
len(response) / 100 (rlhf_dist.eval.rules:length_reward). The claim: without (or with too little) KL
penalty the policy learns ever longer, repetitive responses; a penalty holds it near the reference.
The JSON holds, per coefficient, the per-step reward / KL / response-length curves, their final
values, the held-out eval of the final policy and example generations (start vs end).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rlhf_dist.config import RLHFConfig
from rlhf_dist.eval.experiments.common import (
    HELPFULNESS_JUDGE, arm_config, curves, function_source, plot_step_curves, provenance, run_arm,
)
from rlhf_dist.utils import write_json

LENGTH_REWARD = "rlhf_dist.eval.rules:length_reward"
LENGTH_HACKING_COEFS = (0.0, 0.1)
KL_SWEEP_COEFS = (0.001, 0.02, 0.5)


def sweep_config(cfg: RLHFConfig, run_dir: Path, coef: float) -> RLHFConfig:
    """`cfg` with the length reward as the only reward source and a fixed KL coefficient `coef`."""
    return arm_config(cfg, run_dir, f"kl{coef:g}", [function_source(LENGTH_REWARD)], kl_coef=coef)


def _arm_summary(coef: float, arm: dict) -> dict:
    ev = arm["eval"]
    return {"kl_coef": coef, "run_dir": arm["run_dir"], **curves(arm["history"]),
            "eval": {k: ev[k] for k in ("response_length", "response_length_start", "kl", "judge_score_policy",
                                        "judge_score_start", "win_rate")},
            "examples": arm["examples"], "settings": arm["settings"]}


def _label(run: dict) -> str:
    return f"KL coef {run['kl_coef']:g}" + (" (no penalty)" if run["kl_coef"] == 0 else "")


def reward_hacking_experiment(cfg: RLHFConfig, out_dir: str | Path, kl_coefs: Sequence[float] = KL_SWEEP_COEFS,
                              name: str = "kl_sweep", runs_dir: str | Path | None = None,
                              command: str | None = None) -> Path:
    """Length-rewarded PPO once per KL coefficient; writes <out_dir>/<name>.json and <name>.png.

    The arms' run directories go to `runs_dir` (default <run.output_dir>/<name>), so that `out_dir`
    (docs/experiments for the committed results) receives only the figure and the JSON."""
    out = Path(out_dir)
    runs_root = Path(runs_dir) if runs_dir else Path(cfg.run.output_dir) / name
    runs = [_arm_summary(coef, run_arm(sweep_config(cfg, runs_root / f"kl_{coef:g}", coef)))
            for coef in kl_coefs]
    plot_step_curves(runs, _label, out / f"{name}.png",
                     f"reward hacking: length reward vs KL coefficient ({cfg.policy.path})",
                     "reward (response characters / 100)", length_cap=cfg.rollout.sampling.max_new_tokens)
    write_json(out / f"{name}.json", {
        "experiment": name, "reward": LENGTH_REWARD, "judge": HELPFULNESS_JUDGE, "steps": cfg.ppo.steps,
        "kl_coefs": list(kl_coefs), "runs": runs, "reproduce": provenance(cfg, command),
        "units": {"reward": "characters / 100", "kl": "nats per sequence (k1)", "response_length": "tokens"},
    })
    return out
