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
