"""Annotation quality (pure): accuracy on gold pairs, agreement with the others' majority, position bias.

An annotator's reliability is their gold accuracy when they judged at least MIN_GOLD gold pairs,
else their agreement with the leave-one-out majority of the other votes on the same pairs (None
when neither can be measured). Below feedback.min_reliability they are flagged, and the export can
down-weight or drop their votes (feedback.unreliable).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from rlhf_dist.algo.agreement import binomial_two_sided_p

MIN_GOLD = 3


@dataclass(frozen=True)
class VoteFact:
    annotator: str
    pair_id: int
    preference: int  # 0 = A, 1 = B, 2 = tie
    choice: str  # as clicked: left | right | tie
    gold: int | None  # the pair's known answer, if it is a gold pair


def _majority_of(prefs: Sequence[int]) -> int | None:
    """The strict plurality of the labels; None when two labels share the top count."""
    counts = Counter(prefs).most_common()
    if not counts or (len(counts) > 1 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def annotator_quality(votes: Sequence[VoteFact], min_reliability: float = 0.0) -> dict[str, dict]:
    """Per annotator: votes, gold accuracy, agreement with the others' majority, left rate, reliability, flag."""
    by_pair: dict[int, list[VoteFact]] = defaultdict(list)
    for v in votes:
        by_pair[v.pair_id].append(v)
    stats: dict[str, dict] = defaultdict(lambda: {"votes": 0, "gold_votes": 0, "gold_correct": 0, "compared": 0,
                                                  "agreed": 0, "decisive": 0, "left": 0})
    for v in votes:
        s = stats[v.annotator]
        s["votes"] += 1
        if v.gold is not None:
            s["gold_votes"] += 1
            s["gold_correct"] += v.preference == v.gold
        others = _majority_of([o.preference for o in by_pair[v.pair_id] if o is not v])
        if others is not None:
            s["compared"] += 1
            s["agreed"] += v.preference == others
        if v.choice != "tie":
            s["decisive"] += 1
            s["left"] += v.choice == "left"
    out = {}
    for name, s in sorted(stats.items()):
        gold_acc = s["gold_correct"] / s["gold_votes"] if s["gold_votes"] else None
        agreement = s["agreed"] / s["compared"] if s["compared"] else None
        reliability = gold_acc if s["gold_votes"] >= MIN_GOLD else agreement
        out[name] = {
            "votes": s["votes"], "gold_votes": s["gold_votes"], "gold_accuracy": _round(gold_acc),
            "majority_agreement": _round(agreement), "left_rate": _round(s["left"] / s["decisive"])
            if s["decisive"] else None, "reliability": _round(reliability),
            "flagged": reliability is not None and reliability < min_reliability,
        }
    return out


def position_bias(votes: Sequence[VoteFact]) -> dict:
    """Share of decisive votes that chose the left side, and an exact two-sided binomial test against 0.5."""
    decisive = [v for v in votes if v.choice != "tie"]
    left = sum(v.choice == "left" for v in decisive)
    return {"left_rate": _round(left / len(decisive)) if decisive else None, "decisive_votes": len(decisive),
            "left_votes": left, "binomial_p": _round(binomial_two_sided_p(left, len(decisive)), 6)}


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)
