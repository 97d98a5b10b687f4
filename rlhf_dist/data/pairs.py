"""Convert A/B feedback, rankings and ratings into preference pairs.

Reward-model and DPO training consume :class:`PreferencePair`; every other
feedback format is reduced to pairs here.  Rows that a conversion drops are
counted and reported, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Literal, Sequence

from rlhf_dist.data.records import ABFeedback, PreferencePair, RankedList, Rating
from rlhf_dist.data.validate import LoadResult, OnError, load_records

TiePolicy = Literal["drop", "half"]
PairFormat = Literal["pair", "ab", "ranked", "rating"]


@dataclass
class PairConversion:
    """Pairs produced from A/B feedback and how many rows were dropped, by reason."""

    pairs: list[PreferencePair]
    dropped_ties: int = 0
    dropped_low_confidence: int = 0
    dropped_identical: int = 0  # response A == response B: no preference to learn
    rows: list[int] = field(default_factory=list)  # index of the input row of each pair


def ab_to_pairs(
    rows: Sequence[ABFeedback],
    tie_policy: TiePolicy = "drop",
    min_confidence: float = 0.0,
    confidence_as_weight: bool = False,
    confidence_as_target: bool = False,
) -> PairConversion:
    """Turn A/B judgements into pairs: the preferred response becomes ``chosen``.

    Rows with ``confidence < min_confidence`` are dropped first.  Ties are
    dropped (``tie_policy="drop"``) or kept as ``target=0.5`` pairs
    (``"half"``).  With ``confidence_as_weight`` the pair weight is the
    confidence, so rows with confidence 0 (weight 0 would be a no-op) are
    counted as low-confidence drops.  With ``confidence_as_target`` a decisive
    row's target is ``0.5 + confidence / 2`` (see :func:`_ab_target`).
    """
    if tie_policy not in ("drop", "half"):
        raise ValueError(f"tie_policy must be 'drop' or 'half', got {tie_policy!r}")
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
    result = PairConversion(pairs=[])
    for index, row in enumerate(rows):
        if row.response_a == row.response_b:
            result.dropped_identical += 1
            continue
        if row.confidence < min_confidence or (confidence_as_weight and row.confidence == 0):
            result.dropped_low_confidence += 1
            continue
        if row.preference == 2 and tie_policy == "drop":
            result.dropped_ties += 1
            continue
        a_wins = row.preference in (0, 2)  # for ties the order is irrelevant at target 0.5
        result.pairs.append(
            PreferencePair(
                prompt=row.prompt,
                chosen=row.response_a if a_wins else row.response_b,
                rejected=row.response_b if a_wins else row.response_a,
                weight=row.confidence if confidence_as_weight else 1.0,
                target=_ab_target(row, confidence_as_target),
            )
        )
        result.rows.append(index)
    return result


def _ab_target(row: ABFeedback, confidence_as_target: bool = False) -> float:
    """P(chosen preferred): 0.5 for a tie, the soft vote fraction when the row has one (votes of several people
    outweigh one person's confidence), else 1, or with ``confidence_as_target`` 0.5 + confidence / 2: a sure
    vote (1) is a hard label, a guess (0) says nothing."""
    if row.preference == 2:
        return 0.5
    if row.p_a is None:
        return 0.5 + 0.5 * row.confidence if confidence_as_target else 1.0
    return row.p_a if row.preference == 0 else 1.0 - row.p_a


def ranked_to_pairs(rows: Sequence[RankedList]) -> list[PreferencePair]:
    """Every pair of responses with different ranks; the better (lower) rank is ``chosen``."""
    return [pair for _, pair in _ranked_pairs(rows)]


def _ranked_pairs(rows: Sequence[RankedList]) -> list[tuple[int, PreferencePair]]:
    """(input row index, pair); equal ranks and equal texts carry no preference and give no pair."""
    pairs = []
    for index, row in enumerate(rows):
        for i, j in combinations(range(len(row.responses)), 2):
            if row.ranking[i] == row.ranking[j] or row.responses[i] == row.responses[j]:
                continue
            best, worst = (i, j) if row.ranking[i] < row.ranking[j] else (j, i)
            pairs.append((index, PreferencePair(prompt=row.prompt, chosen=row.responses[best],
                                                rejected=row.responses[worst])))
    return pairs


def ratings_to_pairs(rows: Sequence[Rating], min_gap: float = 0.0) -> list[PreferencePair]:
    """Pair up responses to the same prompt; the higher reward is ``chosen``.

    A pair is kept when the reward gap is ``>= min_gap`` (``min_gap > 0``) or
    strictly positive (``min_gap == 0``), since equal rewards express no preference.
    """
    return [pair for _, pair in _rating_pairs(rows, min_gap)]


def _rating_pairs(rows: Sequence[Rating], min_gap: float = 0.0) -> list[tuple[int, PreferencePair]]:
    """(index of the chosen row, pair); the same response text rated twice gives no pair."""
    if min_gap < 0:
        raise ValueError(f"min_gap must be >= 0, got {min_gap}")
    by_prompt: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_prompt.setdefault(row.prompt, []).append(index)
    pairs = []
    for prompt, group in by_prompt.items():
        for ia, ib in combinations(group, 2):
            a, b = rows[ia], rows[ib]
            gap = abs(a.reward - b.reward)
            if gap == 0 or gap < min_gap or a.response == b.response:
                continue
            (hi, i_hi), lo = ((a, ia), b) if a.reward > b.reward else ((b, ib), a)
            pairs.append((i_hi, PreferencePair(prompt=prompt, chosen=hi.response, rejected=lo.response)))
    return pairs


@dataclass
class PairLoadReport:
    """What :func:`load_preference_pairs` read, rejected, dropped and produced."""

    load: LoadResult
    n_pairs: int = 0
    dropped_ties: int = 0
    dropped_low_confidence: int = 0
    dropped_identical: int = 0
    locations: list[str] = field(default_factory=list)  # file:line of the row each pair comes from

    def summary(self) -> str:
        """One log line describing the whole load."""
        parts = [self.load.summary(), f"{self.n_pairs} pairs"]
        if self.dropped_ties:
            parts.append(f"dropped {self.dropped_ties} ties")
        if self.dropped_low_confidence:
            parts.append(f"dropped {self.dropped_low_confidence} low-confidence rows")
        if self.dropped_identical:
            parts.append(f"dropped {self.dropped_identical} rows whose two responses are the same text")
        return "; ".join(parts)


def _check_options(
    fmt: str, tie_policy: str, min_confidence: float, confidence_as_weight: bool, min_gap: float,
    confidence_as_target: bool = False,
) -> None:
    # An option that does not apply to the format is almost certainly a config mistake.
    ab_only = tie_policy != "drop" or min_confidence != 0.0 or confidence_as_weight or confidence_as_target
    if ab_only and fmt != "ab":
        raise ValueError("tie_policy/min_confidence/confidence_as_weight/confidence_as_target apply to fmt='ab' "
                         f"only, not {fmt!r}")
    if min_gap != 0.0 and fmt != "rating":
        raise ValueError(f"min_gap applies to fmt='rating' only, not {fmt!r}")


def load_preference_pairs(
    path: str | Path,
    fmt: PairFormat,
    on_error: OnError = "fail",
    tie_policy: TiePolicy = "drop",
    min_confidence: float = 0.0,
    confidence_as_weight: bool = False,
    min_gap: float = 0.0,
    allow_extra: bool = False,
    confidence_as_target: bool = False,
) -> tuple[list[PreferencePair], PairLoadReport]:
    """Load ``path`` in feedback format ``fmt`` and convert it to preference pairs."""
    if fmt not in ("pair", "ab", "ranked", "rating"):
        raise ValueError(f"fmt must be 'pair', 'ab', 'ranked' or 'rating', got {fmt!r}")
    _check_options(fmt, tie_policy, min_confidence, confidence_as_weight, min_gap, confidence_as_target)
    loaded = load_records(path, fmt, on_error=on_error, allow_extra=allow_extra)
    report = PairLoadReport(load=loaded)
    if fmt == "pair":
        pairs, rows = list(loaded.records), list(range(len(loaded.records)))
    elif fmt == "ab":
        conv = ab_to_pairs(loaded.records, tie_policy, min_confidence, confidence_as_weight, confidence_as_target)
        pairs, rows = conv.pairs, conv.rows
        report.dropped_ties, report.dropped_low_confidence = conv.dropped_ties, conv.dropped_low_confidence
        report.dropped_identical = conv.dropped_identical
    else:
        found = _ranked_pairs(loaded.records) if fmt == "ranked" else _rating_pairs(loaded.records, min_gap)
        rows, pairs = [i for i, _ in found], [p for _, p in found]
    report.n_pairs = len(pairs)
    report.locations = [loaded.locations[i] for i in rows]
    return pairs, report
