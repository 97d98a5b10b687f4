"""A new advantage estimator and a new policy loss, defined and registered in this file only (no other
module touched), chosen in the config by 'module:function' and run for one PPO step on the real engine.

The estimator runs in the driver (this process); the loss runs in the policy's Ray actor, which imports
this module itself when it validates the config (algo/registry.py: 'module:function' names).
Kept light at import: the actors import it.
"""

from __future__ import annotations

import pytest

from rlhf_dist.algo.registry import ADVANTAGES, POLICY_LOSSES, AdvantageInputs, PolicyLossInputs

CALLS: list[tuple[int, int]] = []  # (B, R) of each toy estimator call in this process


@ADVANTAGES.register("toy_sign", group=True)
def toy_sign_advantage(x: AdvantageInputs):
    """A_i = sign(R_i - mean_G R) on every token of sample i."""
    rewards = x.sequence_rewards.view(-1, x.group_size)
    sign = (rewards - rewards.mean(dim=1, keepdim=True)).sign().reshape(-1)
    CALLS.append(tuple(x.mask.shape))
    adv = sign.unsqueeze(1) * x.mask
    return adv, adv


@POLICY_LOSSES.register("toy_marked_ppo")
def toy_marked_ppo_loss(x: PolicyLossInputs):
    """PPO's loss plus a stat that proves it ran in the actor."""
    loss, stats = POLICY_LOSSES.get("ppo").fn(x)
    return loss, {**stats, "toy_marker": loss.new_tensor(1.0)}


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_toy_estimator_and_loss_from_a_test_file_run_a_ppo_step(tmp_path):
    from rlhf_dist.config import load_config
    from rlhf_dist.config.roles import active_roles
    from rlhf_dist.stages.ppo import run_ppo_stage

    cfg = load_config("configs/tiny.yaml", [
        f"run.output_dir={tmp_path}", "tracking.tensorboard=false", "tracking.progress=false", "data.demo_size=32",
        f"ppo.advantage={__name__}:toy_sign_advantage", f"ppo.policy_loss={__name__}:toy_marked_ppo_loss",
        "ppo.steps=1", "checkpoint.every_steps=0", "rollout.sampling.samples_per_prompt=2",
        "ppo.rollout_batch_size=4", "ppo.ppo_epochs=1", "cluster.policy.num_actors=1", "rollout.backend=hf"])
    assert "critic" not in active_roles(cfg)  # registered without needs_critic
    CALLS.clear()
    hist = run_ppo_stage(cfg).history
    assert len(hist) == 1 and len(CALLS) == 1 and CALLS[0][0] == 8  # one call, 4 prompts x 2 samples
    assert hist[0]["policy/toy_marker"] == 1.0  # the loss ran in the policy actor
    assert abs(hist[0]["advantage/mean"]) <= 1.0 and hist[0]["train/skipped_updates"] == 0
