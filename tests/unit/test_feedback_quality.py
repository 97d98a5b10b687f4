"""Annotator quality against hand-computed values: gold accuracy, majority agreement, position bias."""

import pytest

from rlhf_dist.algo.agreement import binomial_two_sided_p, bootstrap_win_rate
from rlhf_dist.feedback.quality import VoteFact, annotator_quality, position_bias


def _v(name, pair, pref, choice="left", gold=None):
    return VoteFact(name, pair, pref, choice, gold)


# pairs 1-3 are gold (answers 0, 1, 0); pair 4 is not.
VOTES = [
    _v("ann", 1, 0, gold=0), _v("bob", 1, 0, "right", gold=0), _v("cat", 1, 1, gold=0),
    _v("ann", 2, 1, "right", gold=1), _v("bob", 2, 1, gold=1), _v("cat", 2, 0, gold=1),
    _v("ann", 3, 0, gold=0), _v("bob", 3, 1, "right", gold=0), _v("cat", 3, 1, gold=0),
    _v("ann", 4, 2, "tie"), _v("bob", 4, 0), _v("cat", 4, 0),
]


def test_gold_accuracy_and_majority_agreement_hand_computed():
    q = annotator_quality(VOTES, min_reliability=0.5)
    # ann: gold 3/3; others' majority per pair: p1 (0,1) none, p2 (1,0) none, p3 (1,1) -> 1 (ann said 0),
    # p4 (0,0) -> 0 (ann said tie): 0 of 2 agree
    assert (q["ann"]["gold_accuracy"], q["ann"]["majority_agreement"], q["ann"]["reliability"]) == (1.0, 0.0, 1.0)
    # bob: gold 2/3; majority of others: p1 (0,1) none, p2 (1,0) none, p3 (0,1) none, p4 (2,0) none
    assert (q["bob"]["gold_accuracy"], q["bob"]["majority_agreement"]) == (pytest.approx(0.6667), None)
    # cat: gold 0/3 -> reliability 0.0 < 0.5: flagged; others' majority p1 (0,0) -> 0 (cat 1), p2 (1,1) -> 1
    # (cat 0), p3 (0,1) none, p4 (2,0) none: 0 of 2
    assert (q["cat"]["gold_accuracy"], q["cat"]["majority_agreement"], q["cat"]["flagged"]) == (0.0, 0.0, True)
    assert not q["ann"]["flagged"] and not q["bob"]["flagged"]
    # left rate over decisive votes: ann 2 of 3 decisive (p1 left, p2 right, p3 left)
    assert q["ann"]["left_rate"] == pytest.approx(0.6667)


def test_reliability_falls_back_to_majority_agreement_without_enough_gold():
    votes = [_v("a", p, 0) for p in range(4)] + [_v("b", p, 0) for p in range(4)] + [_v("c", p, 1) for p in range(4)]
    q = annotator_quality(votes, min_reliability=0.5)
    # c against a+b (0, 0): majority 0, c said 1 on all 4 pairs -> 0.0, flagged
    assert (q["c"]["reliability"], q["c"]["flagged"]) == (0.0, True)
    # a against b+c (0, 1): no majority on any pair -> unmeasurable, never flagged
    assert (q["a"]["majority_agreement"], q["a"]["reliability"], q["a"]["flagged"]) == (None, None, False)


def test_position_bias_with_an_exact_binomial_test():
    bias = position_bias(VOTES)
    # 11 decisive votes, 8 chose the left side: p = 2 * (C(11,8)+C(11,9)+C(11,10)+C(11,11)) / 2^11 = 464/2048
    assert (bias["left_votes"], bias["decisive_votes"]) == (8, 11)
    assert bias["binomial_p"] == pytest.approx(464 / 2048, abs=1e-6)
    assert binomial_two_sided_p(5, 10) == pytest.approx(1.0)
    assert binomial_two_sided_p(10, 10) == pytest.approx(2 / 1024)


def test_bootstrap_win_rate_counts_ties_half_and_brackets_the_point():
    rate, lo, hi = bootstrap_win_rate([[1.0, 0.5], [0.0], [1.0]], n_boot=500, seed=1)
    assert rate == pytest.approx((1.5 + 0 + 1) / 4)
    assert 0.0 <= lo <= rate <= hi <= 1.0 and lo < hi
    assert bootstrap_win_rate([[1.0], [1.0]], n_boot=100) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_win_rate([])
