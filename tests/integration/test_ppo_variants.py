"""The PPO variants on the real engine: Dr. GRPO advantages + GSPO's sequence ratio through the policy loss,
with truncated importance sampling on (ppo.tis_cap, default) and its off-policy metrics."""

from __future__ import annotations

import pytest

from rlhf_dist.config import load_config
from rlhf_dist.stages.ppo import run_ppo_stage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]


def test_dr_grpo_with_gspo_learns_and_reports_is_weights(tmp_path):
    cfg = load_config("configs/tiny.yaml", [
        f"run.output_dir={tmp_path}", "tracking.tensorboard=false", "tracking.progress=false", "data.demo_size=32",
        "ppo.steps=8", "ppo.advantage=dr_grpo", "ppo.policy_loss=gspo", "rollout.backend=hf",
        "cluster.colocate=true", "rollout.sampling.samples_per_prompt=4", "ppo.rollout_batch_size=4",
        "checkpoint.every_steps=0"])
    hist = run_ppo_stage(cfg).history
    rewards = [m["reward/score_raw"] for m in hist]
    assert sum(rewards[-2:]) / 2 > sum(rewards[:2]) / 2 + 0.05, f"reward did not rise: {rewards}"
    assert "critic/loss" not in hist[0]
    # synchronous fp32: the engine's log-probs are the trainer's, so every IS weight is ~1 and none is truncated
    for m in hist:
        assert abs(m["offpolicy/is_weight_mean"] - 1.0) < 1e-4 and m["offpolicy/is_weight_max"] < 1.001
        assert m["offpolicy/is_clipped_frac"] == 0.0
