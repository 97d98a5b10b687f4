"""Agreement between annotators, against hand-computed values."""

import pytest

from rlhf_dist.algo.agreement import krippendorff_alpha_nominal, pairwise_agreement


def test_alpha_hand_computed():
    # units [a,a], [a,b], [b,b]: o_aa = 2, o_ab = o_ba = 1, o_bb = 2; n_a = n_b = 3, n = 6
    # alpha = 1 - (n-1) * (o_ab + o_ba) / (n_a n_b + n_b n_a) = 1 - 5 * 2 / 18 = 4/9
    assert krippendorff_alpha_nominal([["a", "a"], ["a", "b"], ["b", "b"]]) == pytest.approx(4 / 9)


def test_alpha_three_raters_hand_computed():
    # unit [0,0,1] (m=3): ordered pairs 00 x2, 01 x2, 10 x2, each / (m-1) = 2 -> o00 = 1, o01 = o10 = 1
    # unit [1,1] (m=2): o11 += 2. Margins n0 = 2, n1 = 3, n = 5.
    # alpha = 1 - 4 * 2 / (2 * 2 * 3) = 1 - 8/12 = 1/3
    assert krippendorff_alpha_nominal([[0, 0, 1], [1, 1], [2]]) == pytest.approx(1 / 3)


def test_alpha_perfect_chance_and_undefined():
    assert krippendorff_alpha_nominal([[0, 0], [1, 1], [2, 2, 2]]) == pytest.approx(1.0)
    assert krippendorff_alpha_nominal([[0, 1], [1, 0]]) < 0  # systematic disagreement
    assert krippendorff_alpha_nominal([[0, 0], [0, 0]]) is None  # one value only: undefined
    assert krippendorff_alpha_nominal([[0], [1]]) is None  # no unit with two labels


def test_pairwise_agreement_hand_computed():
    # [0,0,1]: 3 rater pairs, 1 agrees; [1,1]: 1 pair, agrees -> 2 / 4
    assert pairwise_agreement([[0, 0, 1], [1, 1], [2]]) == pytest.approx(0.5)
    assert pairwise_agreement([[0], [1]]) is None
