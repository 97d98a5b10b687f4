"""Agreement between annotators: pure functions over lists of labels (no I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence


def krippendorff_alpha_nominal(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Krippendorff's alpha for nominal labels; each unit is the labels several people gave one item.

    alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k, with o the coincidence matrix
    (each unit adds its ordered label pairs weighted 1 / (m_u - 1)) and n_c its margins. Units with
    fewer than two labels carry no agreement information and are left out. None when undefined
    (no pairable labels, or a single label value everywhere).
    """
    coincidence: Counter[tuple[Hashable, Hashable]] = Counter()
    for labels in units:
        m = len(labels)
        if m < 2:
            continue
        counts = Counter(labels)
        for c, n_c in counts.items():
            for k, n_k in counts.items():
                pairs = n_c * (n_c - 1) if c == k else n_c * n_k
                coincidence[(c, k)] += pairs / (m - 1)
    margins: Counter[Hashable] = Counter()
    for (c, _k), value in coincidence.items():
        margins[c] += value
    n = sum(margins.values())
    expected = sum(margins[c] * margins[k] for c in margins for k in margins if c != k)
    if n <= 1 or expected == 0:
        return None
    observed = sum(value for (c, k), value in coincidence.items() if c != k)
    return 1.0 - (n - 1) * observed / expected


def pairwise_agreement(units: Sequence[Sequence[Hashable]]) -> float | None:
    """Share of annotator pairs on the same item who gave the same label; None without such pairs."""
    agree = total = 0
    for labels in units:
        counts = Counter(labels)
        m = len(labels)
        total += m * (m - 1) // 2
        agree += sum(c * (c - 1) // 2 for c in counts.values())
    return agree / total if total else None


def bootstrap_win_rate(scores_per_item: Sequence[Sequence[float]], n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float, float]:
    """Win rate (mean of per-vote scores: win 1, tie 0.5, loss 0) and a percentile bootstrap CI.

    Items (pairs), not votes, are resampled, so several votes on one pair count as one cluster.
    """
    import random

    items = [list(s) for s in scores_per_item if len(s)]
    if not items:
        raise ValueError("bootstrap_win_rate needs at least one vote")
    totals = [(sum(s), len(s)) for s in items]
    point = sum(t for t, _ in totals) / sum(n for _, n in totals)
    rng = random.Random(seed)
    rates = []
    for _ in range(n_boot):
        draw = [totals[rng.randrange(len(totals))] for _ in totals]
        rates.append(sum(t for t, _ in draw) / sum(n for _, n in draw))
    rates.sort()
    lo = rates[int((1 - level) / 2 * (n_boot - 1))]
    hi = rates[int((1 + level) / 2 * (n_boot - 1))]
    return point, lo, hi


def binomial_two_sided_p(successes: int, trials: int, p: float = 0.5) -> float:
    """Exact two-sided binomial test: P(an outcome at most as likely as `successes` | p)."""
    from math import comb

    if trials == 0:
        return 1.0
    probs = [comb(trials, k) * p**k * (1 - p) ** (trials - k) for k in range(trials + 1)]
    observed = probs[successes]
    return min(1.0, sum(q for q in probs if q <= observed * (1 + 1e-9)))


def paired_accuracy_test(correct_a: list[bool], correct_b: list[bool]) -> dict:
    """Exact McNemar test of two models judged on the SAME items: only the items they disagree on count.

    Returns the four counts and the two-sided p-value that A and B are equally accurate (a binomial
    test of `a_only` among the `a_only + b_only` discordant items, p = 0.5)."""
    if len(correct_a) != len(correct_b):
        raise ValueError(f"paired test needs the same items: {len(correct_a)} vs {len(correct_b)} results")
    both = sum(a and b for a, b in zip(correct_a, correct_b))
    a_only = sum(a and not b for a, b in zip(correct_a, correct_b))
    b_only = sum(b and not a for a, b in zip(correct_a, correct_b))
    return {"both_right": both, "a_only": a_only, "b_only": b_only,
            "both_wrong": len(correct_a) - both - a_only - b_only,
            "p_value": binomial_two_sided_p(a_only, a_only + b_only)}
