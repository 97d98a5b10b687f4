"""Reward sources registered by tests/unit/test_reward_sources.py only: outside the test module, so that collecting
the suite does not register them (other tests list the built-ins). Named 'tests.unit.toy_reward_sources:<name>'."""

from __future__ import annotations

from rlhf_dist.rewards import REWARD_SOURCES, RewardCall


@REWARD_SOURCES.register("toy_length")
def toy_length(src, call: RewardCall) -> list[float]:
    """The response's length in characters."""
    return [float(len(r)) for r in call.responses]


@REWARD_SOURCES.register("toy_judged", needs_reward_model=True)
def toy_judged(src, call: RewardCall) -> list[float]:
    """The reward model's score plus one."""
    return [s + 1.0 for s in call.model_scores()]
