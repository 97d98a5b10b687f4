"""Checkable rule rewards, usable as `ppo.rewards: [{kind: function, function: "rlhf_dist.eval.rules:NAME"}]`.

Each takes (prompts, responses) and returns one float per sample: the text rule of data/text_rules.py
applied to every response.
"""

from __future__ import annotations

import re

from rlhf_dist.data.demo import NEGATIVE_WORDS, POSITIVE_WORDS
from rlhf_dist.data.text_rules import TEXT_RULES


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


# --- rewards and the judge of the multi-objective experiment (rlhf-dist experiment multi-objective) ---

CONCISE_CHARS = 300  # a response this long or longer earns no conciseness reward
# words of the built-in prompt templates that name the task, not the topic: they do not make a response on-topic
_INSTRUCTION_WORDS = frozenset(
    "write short review what think describe your experience with tell friend give honest opinion how was share "
    "few thoughts about would recommend this that the".split())


def concise_score(text: str) -> float:
    """1 for an empty response, falling linearly to 0 at CONCISE_CHARS characters: prefers short answers."""
    return max(0.0, 1.0 - len(text) / CONCISE_CHARS)


def helpful_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """R_helpful stand-in: the demo's positivity rule (saturating in the number of positive words, so more
    words can still earn more: the verbosity pull a learned helpfulness RM often has)."""
    return _apply("sentiment", responses)


def concise_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """R_concise: concise_score of each response (in [0, 1])."""
    return [concise_score(r) for r in responses]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def helpfulness_score(prompt: str, response: str) -> float:
    """Held-out helpfulness in [0, 1]: the mean of four checks, none of them a training reward.

    on topic     the response names a content word of the prompt (its topic, not the instruction words)
    an opinion   at least one lexicon sentiment word (the prompts ask for a view)
    complete     ends with . ! or ? (not cut off by the token cap)
    not padded   at least half of its words are distinct (repetition is not help)
    """
    words = _words(response)
    if not words:
        return 0.0
    topic = {w for w in _words(prompt) if len(w) > 2 and w not in _INSTRUCTION_WORDS}
    checks = (
        bool(topic & set(words)),
        any(w in POSITIVE_WORDS or w in NEGATIVE_WORDS for w in words),
        response.rstrip().endswith((".", "!", "?")),
        len(set(words)) >= 0.5 * len(words),
    )
    return sum(checks) / len(checks)


def helpfulness_judge(prompts: list[str], responses: list[str]) -> list[float]:
    """eval judge 'rlhf_dist.eval.rules:helpfulness_judge': helpfulness_score per (prompt, response)."""
    return [helpfulness_score(p, r) for p, r in zip(prompts, responses)]
