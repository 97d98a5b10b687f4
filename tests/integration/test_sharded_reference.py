"""ppo.reference_zero_stage 3: the reference's weights sharded over its ranks (DeepSpeed ZeRO-3 inference).

At the start the reference IS the policy, so its log-probs must equal the policy's own. Five rows on two
ranks in chunks of two give the ranks 2 and 1 chunks: the shorter rank must pad its forwards (each is a
collective) or the group deadlocks.
"""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.config import load_config
from rlhf_dist.data.experience import ModelInputs
from rlhf_dist.driver.actors import ModelDirs, build_roles
from rlhf_dist.models.builtin import resolve_model_path

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]


def test_sharded_reference_equals_the_initial_policy_on_uneven_shards(tmp_path):
    cfg = load_config("configs/tiny.yaml", [
        f"run.output_dir={tmp_path}", "tracking.tensorboard=false", "ppo.reference_zero_stage=3",
        "cluster.reference.num_actors=2", "ppo.inference_chunk_size=2", "ppo.advantage=rloo",
        "rollout.sampling.samples_per_prompt=2", "rollout.backend=hf",
        "ppo.rewards=[{kind: function, function: 'rlhf_dist.eval.rules:lowercase_fraction_reward'}]"])
    policy = resolve_model_path(cfg.policy.path)
    generator = torch.Generator().manual_seed(0)
    sequences = torch.randint(3, 250, (5, 12), generator=generator)
    attention = torch.ones(5, 12, dtype=torch.long)
    attention[1, :3] = 0  # a left-padded prompt
    inputs = ModelInputs(sequences, attention, torch.ones(5, 4))
    roles = build_roles(cfg, ModelDirs(policy=policy, reward=None, critic_init=policy), total_updates=1)
    try:
        reference = roles.reference.logprobs(inputs).result()  # [5, 4]
        own = roles.policy.logprobs(inputs).result()
        again = roles.reference.logprobs(inputs.select(slice(0, 1))).result()  # one row: rank 1's shard is empty
    finally:
        roles.shutdown()
    assert reference.shape == (5, 4) and torch.isfinite(reference).all()
    torch.testing.assert_close(reference, own, atol=1e-5, rtol=0)
    torch.testing.assert_close(again, own[:1], atol=1e-5, rtol=0)
