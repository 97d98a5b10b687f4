"""How the vLLM engine splits a rollout batch on CPU: whole prefills per scheduler step (pure)."""

from __future__ import annotations

from rlhf_dist.backends.rollout.vllm_engine import _chunks


def test_one_call_when_the_batch_fits_one_step():
    prompts = [[1] * 40] * 128
    assert _chunks(prompts, 1, max_requests=256, max_tokens=16384) == [(0, 128)]


def test_splits_by_tokens_and_by_requests_counting_samples():
    prompts = [[1] * 40] * 128
    # 2048 tokens per step: 51 prompts of 40 tokens fit (2040), the 52nd would not
    assert _chunks(prompts, 1, max_requests=128, max_tokens=2048) == [(0, 51), (51, 102), (102, 128)]
    # 4 samples per prompt: 160 tokens and 4 requests each -> 8 prompts by requests (32 / 4)
    assert _chunks(prompts, 4, max_requests=32, max_tokens=16384) == [(i, i + 8) for i in range(0, 128, 8)]


def test_a_prompt_longer_than_the_budget_goes_alone():
    prompts = [[1] * 10, [1] * 500, [1] * 10]
    assert _chunks(prompts, 1, max_requests=8, max_tokens=100) == [(0, 1), (1, 2), (2, 3)]
