"""Votes on one pair -> one A/B row (pure; `feedback export` and stats use it)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rlhf_dist.data.records import ABFeedback

Aggregate = Literal["majority", "soft"]


@dataclass(frozen=True)
class VoteRow:
    preference: int  # 0 = A, 1 = B, 2 = tie
    confidence: float
    reasoning: str


def aggregate_votes(prompt: str, response_a: str, response_b: str, votes: Sequence[VoteRow],
                    how: Aggregate = "majority") -> ABFeedback:
    """One A/B row from several votes on the same pair.

    majority: the most frequent choice; as many A as B votes is a tie. confidence = mean confidence
    of the votes that agree with the result.
    soft: p_a = (votes for A + ties / 2) / votes; the row prefers the side above 0.5 (a tie at 0.5)
    and carries p_a as its BT target; confidence = mean confidence of all votes.
    """
    if not votes:
        raise ValueError("aggregate_votes needs at least one vote")
    counts = Counter(v.preference for v in votes)
    if how == "soft":
        p_a = (counts[0] + 0.5 * counts[2]) / len(votes)
        preference = 0 if p_a > 0.5 else 1 if p_a < 0.5 else 2
        agreeing = list(votes)
    elif how == "majority":
        top = max(counts.values())
        leaders = [p for p, c in counts.items() if c == top]
        preference = leaders[0] if len(leaders) == 1 else 2
        p_a = None
        agreeing = [v for v in votes if v.preference == preference] or list(votes)
    else:
        raise ValueError(f"aggregate must be 'majority' or 'soft', got {how!r}")
    confidence = sum(v.confidence for v in agreeing) / len(agreeing)
    reasons = [v.reasoning.strip() for v in votes if v.reasoning.strip()]
    reasoning = f"{len(votes)} vote(s): A {counts[0]}, B {counts[1]}, tie {counts[2]}"
    if reasons:
        reasoning += " | " + " | ".join(reasons)
    return ABFeedback(prompt=prompt, response_a=response_a, response_b=response_b, preference=preference,
                      confidence=round(confidence, 6), reasoning=reasoning, p_a=p_a)
