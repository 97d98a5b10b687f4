"""Pure parts of `rlhf-dist experiment pooling`: the paired test and the example pairs it reports."""

from __future__ import annotations

import pytest

from rlhf_dist.algo.agreement import paired_accuracy_test
from rlhf_dist.eval.experiments.pooling import compare_on_same_pairs


def test_paired_accuracy_test_counts_and_exact_p():
    a = [True, True, False, False, True, True, True]
    b = [True, False, True, False, False, False, False]
    test = paired_accuracy_test(a, b)
    assert (test["both_right"], test["a_only"], test["b_only"], test["both_wrong"]) == (1, 4, 1, 1)
    # 4 of the 5 discordant items favour A: 2 * (C(5,4) + C(5,5)) / 2^5 = 12/32
    assert test["p_value"] == pytest.approx(12 / 32)
    assert paired_accuracy_test([True, False], [True, False])["p_value"] == 1.0  # no disagreement
    with pytest.raises(ValueError, match="same items"):
        paired_accuracy_test([True], [True, False])


def _rows(margins):
    return [{"prompt": f"p{i}", "preferred": f"good {i}", "other": f"bad {i}", "margin": m}
            for i, m in enumerate(margins)]


def test_compare_on_same_pairs_puts_the_largest_disagreement_first():
    last, mean = _rows([2.0, -0.5, 1.0, 0.3]), _rows([1.0, 0.5, -3.0, 0.2])
    paired, examples = compare_on_same_pairs(last, mean, n_examples=3)
    assert paired == {"n_pairs": 4, "both_right": 2, "last_only": 1, "mean_only": 1, "both_wrong": 0,
                      "p_value": pytest.approx(1.0)}
    # disagreements first, the larger gap (pair 2: 1.0 vs -3.0) before pair 1; then the agreements
    assert [e["prompt"] for e in examples] == ["p2", "p1", "p0"]
    assert (examples[0]["margin_last"], examples[0]["margin_mean"]) == (1.0, -3.0)
    with pytest.raises(ValueError, match="different held-out pairs"):
        compare_on_same_pairs(last, _rows([1.0, 1.0, 1.0]))
