"""Checkable text rules: the ONE list of rule names that judges, rule rewards and simulated annotators share.

A rule maps one response text to a float (higher = better by that rule). They are used as
  - held-out eval judges (`eval.judge`, rlhf_dist/eval/judges.py),
  - PPO reward functions (`rlhf_dist.eval.rules:<name>_reward` wrappers over (prompts, responses)),
  - simulated annotators (`feedback.simulated.rule`, rlhf_dist/feedback/simulated.py).
"""

from __future__ import annotations

from collections.abc import Callable

from rlhf_dist.data.demo import sentiment_score


def length_score(text: str) -> float:
    """Characters / 100: the classic reward-hacking target."""
    return len(text) / 100.0


def lowercase_fraction(text: str) -> float:
    """Fraction of characters in a-z: dense and learnable even by a random tiny byte-level model."""
    return sum("a" <= c <= "z" for c in text) / max(1, len(text))


def vowel_fraction(text: str) -> float:
    """Fraction of characters that are vowels."""
    return sum(c in "aeiou" for c in text) / max(1, len(text))


TEXT_RULES: dict[str, Callable[[str], float]] = {
    "sentiment": sentiment_score,  # lexicon positivity in [-1, 1], the demo task's goal
    "length": length_score,
    "lowercase": lowercase_fraction,
    "vowel": vowel_fraction,
}

# eval.judge name -> 'module:callable' of the batch reward function over (prompts, responses)
JUDGES: dict[str, str] = {
    "sentiment": "rlhf_dist.eval.rules:sentiment_reward",
    "length": "rlhf_dist.eval.rules:length_reward",
    "lowercase": "rlhf_dist.eval.rules:lowercase_fraction_reward",
    "vowel": "rlhf_dist.eval.rules:vowel_fraction_reward",
}


def judge_spec(name: str) -> str:
    """'module:callable' of a registered judge name, or `name` itself when it already is one."""
    if name in JUDGES:
        return JUDGES[name]
    if ":" in name and all(name.partition(":")[::2]):
        return name
    raise ValueError(f"unknown judge '{name}' (known: {', '.join(JUDGES)}, or 'module:callable')")
