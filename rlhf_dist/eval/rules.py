"""Checkable rule rewards, usable as `ppo.rewards: [{kind: function, function: "rlhf_dist.eval.rules:NAME"}]`.

Each takes (prompts, responses) and returns one float per sample.
"""

from __future__ import annotations

from rlhf_dist.data.demo import sentiment_score


def sentiment_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Lexicon sentiment of the response in [-1, 1] (the demo task's notion of 'better')."""
    return [sentiment_score(r) for r in responses]


def vowel_fraction_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Fraction of response characters that are vowels: learnable even by a random tiny byte-level model."""
    return [sum(c in "aeiou" for c in r) / max(1, len(r)) for r in responses]


def length_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Response length in characters / 100: the classic reward-hacking target."""
    return [len(r) / 100.0 for r in responses]


def lowercase_fraction_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Fraction of response characters in a-z: a dense, learnable target for tiny random byte-level models."""
    return [sum("a" <= c <= "z" for c in r) / max(1, len(r)) for r in responses]
