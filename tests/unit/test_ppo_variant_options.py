"""The PPO-variant options (GSPO, Dr. GRPO, truncated IS, DAPO filter): schema, rules, and make_experience."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_dist.algo import RunningMeanStd
from rlhf_dist.backends.rollout import RolloutSample
from rlhf_dist.config import ConfigError, PPOConfig, load_config
from rlhf_dist.data.experience import RolloutBatch, InferenceOutputs, pack_samples
from rlhf_dist.driver.experience import make_experience


def test_defaults_keep_todays_loss():
    ppo = PPOConfig()
    assert (ppo.policy_loss, ppo.loss_aggregation, ppo.tis_cap, ppo.tis_level) == ("ppo", None, 2.0, "token")
    assert ppo.clip_bounds() == (ppo.clip_eps, ppo.clip_eps)  # symmetric unless asked
    assert (ppo.dynamic_sampling, ppo.dynamic_sampling_max_rounds) == (False, 4)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["ppo.dynamic_sampling=true"], "ppo.dynamic_sampling drops groups with zero group advantage, which needs "
                                        "a group estimator: ppo.advantage is 'gae'"),
        (["ppo.advantage=reinforce_pp", "ppo.dynamic_sampling=true"], "ppo.advantage is 'reinforce_pp'"),
        (["ppo.advantage=dr_grpo"], "ppo.advantage 'dr_grpo' compares samples of one prompt"),
        (["ppo.tis_cap=0.5"], "ppo.tis_cap"),
        (["ppo.policy_loss=gpo"], "ppo.policy_loss"),
        (["ppo.loss_aggregation=sum"], "ppo.loss_aggregation"),
        (["ppo.dynamic_sampling_max_rounds=0"], "ppo.dynamic_sampling_max_rounds"),
    ],
)
def test_bad_variant_options_are_one_clear_error(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_group_variants_validate():
    cfg = load_config(None, ["ppo.advantage=dr_grpo", "rollout.sampling.samples_per_prompt=4",
                             "ppo.dynamic_sampling=true", "ppo.policy_loss=gspo", "ppo.tis_cap=null"])
    assert cfg.ppo.advantage == "dr_grpo" and cfg.ppo.tis_cap is None and cfg.ppo.dynamic_sampling


def _batch(rollout_lp: list[list[float]]) -> RolloutBatch:
    samples = [RolloutSample(prompt_ids=[5], response_ids=[6] * len(lp), logprobs=lp, finish_reason="stop")
               for lp in rollout_lp]
    inputs, lp = pack_samples(samples, 0)
    return RolloutBatch(inputs, lp, ["a", "a", "b", "b"], ["x", "y", "z", "w"])


def test_make_experience_dr_grpo_and_offpolicy_stats():
    # engine log-probs; the recomputed ones are ln 0.5 everywhere
    behaviour = [[math.log(0.25), math.log(0.5)], [math.log(0.5)], [math.log(0.1)], [math.log(0.5), math.log(0.5)]]
    batch = _batch(behaviour)
    old = torch.full_like(batch.inputs.action_mask, math.log(0.5))
    inference = InferenceOutputs(old_logprobs=old, ref_logprobs=old, values=torch.zeros_like(old))  # zero KL
    cfg = PPOConfig(advantage="dr_grpo", reward_clip=None)
    exp, stats = make_experience(cfg, batch, inference, torch.tensor([1.0, 3.0, 0.0, 4.0]), 0.1, RunningMeanStd(), 2)
    # groups {1, 3} and {0, 4}: minus the group mean, no std division -> [-1, 1, -2, 2]
    assert exp.advantages[:, 0].tolist() == [-1.0, 1.0, -2.0, 2.0]
    assert exp.advantages[1, 1] == 0  # padding
    assert torch.equal(exp.behaviour_logprobs, batch.rollout_logprobs)
    # raw ratios 0.5/0.25 = 2, 1, 1, 0.5/0.1 = 5, 1, 1 over 6 tokens: mean 11/6, max 5; 1 token above the cap 2
    assert stats["offpolicy/is_weight_mean"] == pytest.approx(11 / 6)
    assert stats["offpolicy/is_weight_max"] == pytest.approx(5.0)
    assert stats["offpolicy/is_clipped_frac"] == pytest.approx(1 / 6)
    # engine vs recomputed, largest over the 6 response tokens: |ln 0.5 - ln 0.1| = ln 5 (padding left out)
    assert stats["rollout/logprob_max_abs_diff"] == pytest.approx(math.log(5))
    # with the engine's log-probs as the old ones there is nothing to correct, and no such metrics
    _, stats = make_experience(PPOConfig(advantage="dr_grpo", old_logprobs="rollout"), batch, inference,
                               torch.zeros(4), 0.1, RunningMeanStd(), 2)
    assert not any(k.startswith("offpolicy/") for k in stats) and "rollout/logprob_max_abs_diff" not in stats


def test_make_experience_sequence_level_offpolicy_stats():
    # the same samples; per row the product of the token ratios: 2 * 1 = 2, 1, 5, 1 * 1 = 1, on each row's tokens
    behaviour = [[math.log(0.25), math.log(0.5)], [math.log(0.5)], [math.log(0.1)], [math.log(0.5), math.log(0.5)]]
    batch = _batch(behaviour)
    old = torch.full_like(batch.inputs.action_mask, math.log(0.5))
    inference = InferenceOutputs(old_logprobs=old, ref_logprobs=old, values=torch.zeros_like(old))
    _, stats = make_experience(PPOConfig(advantage="dr_grpo", tis_level="sequence"), batch, inference,
                               torch.zeros(4), 0.1, RunningMeanStd(), 2)
    # over the 6 tokens: (2 + 2 + 1 + 5 + 1 + 1) / 6 = 2, max 5; only row 2's one token is above the cap 2
    assert stats["offpolicy/is_weight_mean"] == pytest.approx(2.0)
    assert stats["offpolicy/is_weight_max"] == pytest.approx(5.0)
    assert stats["offpolicy/is_clipped_frac"] == pytest.approx(1 / 6)
