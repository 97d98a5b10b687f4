"""The embedded default job (`rlhf-dist demo`, `make demo`).

Today it trains the Bradley-Terry reward model on the built-in demo preferences with a
tiny config-built model and prints the held-out figures; the PPO and pipeline stages
extend it as they land.
"""

from __future__ import annotations

import time
from importlib import resources

from rlhf_dist.config import RLHFConfig, load_config
from rlhf_dist.stages.common import write_json


def demo_config() -> RLHFConfig:
    preset = resources.files("rlhf_dist.config") / "presets" / "demo.yaml"
    with resources.as_file(preset) as path:
        return load_config(path)


def run_demo(cfg: RLHFConfig | None = None) -> int:
    from rlhf_dist.stages.reward import train_reward_model

    cfg = cfg or demo_config()
    start = time.time()
    result = train_reward_model(cfg)
    summary = {"rm_accuracy": result.final_metrics["accuracy"], "rm_kendall_tau": result.final_metrics["kendall_tau"],
               "wall_seconds": round(time.time() - start, 1), "reward_model_dir": str(result.model_dir)}
    write_json(result.model_dir.parent / "summary.json", summary)
    print(f"\ndemo finished in {summary['wall_seconds']} s: reward model held-out accuracy "
          f"{summary['rm_accuracy']:.3f}; outputs in {result.model_dir.parent}")
    return 0
