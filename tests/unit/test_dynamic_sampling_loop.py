"""DAPO's refill loop (driver/dynamic_sampling.py) and the batch concatenation it needs, on hand-made batches."""

from __future__ import annotations

import torch

from rlhf_dist.config import load_config
from rlhf_dist.data.experience import RolloutBatch, concat_rollouts, pack_samples
from rlhf_dist.backends.rollout.base import RolloutSample
from rlhf_dist.driver.dynamic_sampling import informative_batch


def _batch(tag: str, prompt_len: int, response_lens: list[int]) -> RolloutBatch:
    samples = [RolloutSample([7] * prompt_len, [5] * r, [-0.5] * r, "length") for r in response_lens]
    inputs, logprobs = pack_samples(samples, pad_id=0)
    return RolloutBatch(inputs, logprobs, [tag] * len(samples), [f"{tag}{i}" for i in range(len(samples))])


def test_concat_repads_prompts_left_and_responses_right():
    a, b = _batch("a", 2, [1, 3]), _batch("b", 4, [2, 2])
    out = concat_rollouts([a, b], pad_id=0)
    assert out.inputs.sequences.shape == (4, 4 + 3) and out.inputs.response_width == 3
    # a's row 0: 2 prompt tokens left-padded to 4, then 1 response token, right-padded to 3
    assert out.inputs.sequences[0].tolist() == [0, 0, 7, 7, 5, 0, 0]
    assert out.inputs.attention_mask[0].tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert out.inputs.action_mask[1].tolist() == [1, 1, 1] and out.rollout_logprobs[2].tolist() == [-0.5, -0.5, 0.0]
    assert out.prompts == ["a", "a", "b", "b"] and out.responses[3] == "b1"


def _cfg(rounds: int):
    return load_config("configs/tiny.yaml", [
        "ppo.advantage=grpo", "rollout.sampling.samples_per_prompt=2", "ppo.rollout_batch_size=2",
        "ppo.dynamic_sampling=true", f"ppo.dynamic_sampling_max_rounds={rounds}",
        "ppo.policy_train.global_batch_size=2", "ppo.critic_train.global_batch_size=2",
        "ppo.policy_train.micro_batch_size=1", "ppo.critic_train.micro_batch_size=1"])


# scores per response text: group "a" (a0, a1) is flat, groups b and c teach something
SCORES = {"a0": 1.0, "a1": 1.0, "b0": 0.0, "b1": 1.0, "c0": 2.0, "c1": 0.0, "d0": 3.0, "d1": 3.0}


def _score(batch: RolloutBatch):
    return torch.tensor([SCORES[r] for r in batch.responses]), {"reward/function0": 0.5}


def _first() -> RolloutBatch:  # two groups: a (flat) and b; rows named a0 a1 | b0 b1 after renaming
    batch = concat_rollouts([_batch("a", 2, [1, 1]), _batch("b", 2, [1, 2])], pad_id=0)
    batch.responses = ["a0", "a1", "b0", "b1"]
    return batch


def test_flat_groups_are_dropped_and_a_second_round_fills_the_batch():
    def more(round_: int) -> RolloutBatch:
        extra = concat_rollouts([_batch("c", 3, [2, 1]), _batch("d", 1, [1, 1])], pad_id=0)
        extra.responses = ["c0", "c1", "d0", "d1"]
        return extra

    batch, scores, means, stats = informative_batch(_cfg(rounds=4), _first(), _score, more, pad_id=0)
    assert batch.responses == ["b0", "b1", "c0", "c1"]  # a dropped; c kept from round 2; d never needed
    assert scores.tolist() == [0.0, 1.0, 2.0, 0.0]
    assert stats == {"dapo/rounds": 2.0, "dapo/groups_dropped": 2.0, "dapo/groups_filled": 0.0}
    assert means == {"reward/function0": 0.5}


def test_when_the_rounds_run_out_dropped_groups_fill_the_batch():
    batch, scores, _, stats = informative_batch(_cfg(rounds=1), _first(), _score, lambda r: None, pad_id=0)
    assert batch.responses == ["b0", "b1", "a0", "a1"] and len(batch) == 4  # the shape trainers need
    assert stats["dapo/groups_filled"] == 1.0 and stats["dapo/rounds"] == 1.0
