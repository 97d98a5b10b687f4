"""A new advantage estimator, a new policy loss, a new weight-sync transport and a new reward source, defined and
registered in one file only (no other module touched), chosen in the config by 'module:name' and run for one PPO
step on the real engines (one run for all four: each PPO step costs CI half a minute).

The plugins live in tests/integration/toy_plugins.py (imported by the config's 'module:name' lookup, not at
collection). The estimator, the transport and the reward source run in the driver (this process); the loss runs
in the policy's Ray actor, which imports the plugin module itself when it validates the config (algo/registry.py).
"""

from __future__ import annotations

import pytest

PLUGINS = "tests.integration.toy_plugins"  # imported by the config's lookup only, never at collection


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_toy_estimator_loss_transport_and_reward_source_from_a_test_file_run_a_ppo_step(tmp_path):
    from rlhf_dist.config import load_config
    from rlhf_dist.config.topology import active_roles
    from rlhf_dist.stages.ppo import run_ppo_stage
    from tests.integration.toy_plugins import CALLS, SCORED, SENT

    cfg = load_config("configs/tiny.yaml", [
        f"run.output_dir={tmp_path}", "tracking.tensorboard=false", "tracking.progress=false", "data.demo_size=32",
        f"ppo.advantage={PLUGINS}:toy_sign_advantage", f"ppo.policy_loss={PLUGINS}:toy_marked_ppo_loss",
        f"rollout.sync_backend={PLUGINS}:ToyCountedStore",
        f"ppo.rewards=[{{kind: '{PLUGINS}:toy_vowel_count', weight: 0.5}}]",
        "ppo.steps=1", "checkpoint.every_steps=0", "rollout.sampling.samples_per_prompt=2",
        "ppo.rollout_batch_size=4", "ppo.ppo_epochs=1", "cluster.policy.num_actors=1", "rollout.backend=hf"])
    assert "critic" not in active_roles(cfg) and "reward" not in active_roles(cfg)  # neither needs its actors
    CALLS.clear(), SENT.clear(), SCORED.clear()
    hist = run_ppo_stage(cfg).history
    assert len(hist) == 1 and len(CALLS) == 1 and CALLS[0][0] == 8  # one call, 4 prompts x 2 samples
    assert hist[0]["policy/toy_marker"] == 1.0  # the loss ran in the policy actor
    # the step's scores came from the toy source, weighted: mean vowel count (>= 0), logged under its name
    assert SCORED == [8] and hist[0]["reward/toy_vowels0"] >= 0.0
    assert hist[0]["reward/score_raw"] == pytest.approx(0.5 * hist[0]["reward/toy_vowels0"], abs=1e-5)
    assert abs(hist[0]["advantage/mean"]) <= 1.0 and hist[0]["train/skipped_updates"] == 0
    # the step's sync went through the toy transport: every bucket of the plan, in order
    assert SENT and SENT == list(range(len(SENT))) and hist[0]["sync/bytes"] > 0
