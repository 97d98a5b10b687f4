"""The PPO variants on the real engine: Dr. GRPO advantages + GSPO's sequence ratio through the policy loss with
DAPO's asymmetric clip, sequence-level truncated importance sampling (ppo.tis_cap, ppo.tis_level) and its
off-policy metrics, and DAPO's overlong reward shaping as a second reward source."""

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
        "checkpoint.every_steps=0", "ppo.clip_eps_high=0.28", "ppo.tis_level=sequence",
        "ppo.rewards=[{kind: function, function: rlhf_dist.eval.rules:lowercase_fraction_reward}, "
        "{kind: overlong, buffer_tokens: 4, weight: 0.1}]"])
    hist = run_ppo_stage(cfg).history
    rewards = [m["reward/function0"] for m in hist]  # the task's reward, without the length penalty
    assert sum(rewards[-2:]) / 2 > sum(rewards[:2]) / 2 + 0.05, f"reward did not rise: {rewards}"
    assert "critic/loss" not in hist[0]
    for m in hist:
        # synchronous fp32: the engine's log-probs are the trainer's, so every sequence's IS weight is ~1 and
        # none is truncated
        assert abs(m["offpolicy/is_weight_mean"] - 1.0) < 1e-4 and m["offpolicy/is_weight_max"] < 1.001
        assert m["offpolicy/is_clipped_frac"] == 0.0
        # the overlong penalty (in [-1, 0]; responses of 5..8 tokens of the 8-token cap pay) is in the score
        assert -1.0 <= m["reward/overlong1"] <= 0.0
        if m["response/length"] == 8.0:  # every response ran to the cap: the full penalty
            assert m["reward/overlong1"] == -1.0
        assert abs(m["reward/score_raw"] - (m["reward/function0"] + 0.1 * m["reward/overlong1"])) < 1e-5
