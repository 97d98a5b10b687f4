"""Checkable rule rewards, usable as `ppo.rewards: [{kind: function, function: "rlhf_dist.eval.rules:NAME"}]`.

Each takes (prompts, responses) and returns one float per sample: the text rule of data/rules.py
applied to every response.
"""

from __future__ import annotations

from rlhf_dist.data.rules import TEXT_RULES


def _apply(rule: str, responses: list[str]) -> list[float]:
    return [TEXT_RULES[rule](r) for r in responses]


def sentiment_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Lexicon sentiment of the response in [-1, 1] (the demo task's notion of 'better')."""
    return _apply("sentiment", responses)


def vowel_fraction_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Fraction of response characters that are vowels: learnable even by a random tiny byte-level model."""
    return _apply("vowel", responses)


def length_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Response length in characters / 100: the classic reward-hacking target."""
    return _apply("length", responses)


def lowercase_fraction_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Fraction of response characters in a-z: a dense, learnable target for tiny random byte-level models."""
    return _apply("lowercase", responses)
