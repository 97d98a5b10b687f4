"""Hand-computed checks for reward-model metrics."""

import math

import pytest
import torch

from rlhf_dist.algo import (
    calibration,
    kendall_tau,
    mean_kendall_tau,
    pairwise_accuracy,
    reward_margin_stats,
)


def test_pairwise_accuracy_with_tie():
    chosen = torch.tensor([1.0, 2.0, 3.0, 0.0])
    rejected = torch.tensor([0.0, 2.0, 4.0, -1.0])
    # win, tie (0.5), loss, win -> 2.5 / 4
    assert pairwise_accuracy(chosen, rejected) == 0.625
    with pytest.raises(ValueError):
        pairwise_accuracy(torch.zeros(0), torch.zeros(0))


def test_kendall_tau_perfect_reversed_and_one_discordant():
    ranking = [0, 1, 2]  # item 0 is best
    assert kendall_tau([3.0, 2.0, 1.0], ranking) == pytest.approx(1.0)
    assert kendall_tau([1.0, 2.0, 3.0], ranking) == pytest.approx(-1.0)
    # pairs (0,1): 3>1, 0 better -> C; (0,2): 3>2 -> C; (1,2): 1<2 but 1 better -> D
    # (C - D) / 3 = 1/3
    assert kendall_tau([3.0, 1.0, 2.0], ranking) == pytest.approx(1 / 3)


def test_kendall_tau_b_with_ties():
    # scores tie on pair (1,2): C = 2, D = 0, 3 pairs, 1 tied in scores, 0 in ranking
    # tau_b = 2 / sqrt((3-1) * (3-0)) = 2 / sqrt(6) = 0.816497
    assert kendall_tau([2.0, 1.0, 1.0], [0, 1, 2]) == pytest.approx(2 / math.sqrt(6))
    # tied ranking on (0,1): C = 2 ((0,2),(1,2)), D = 0 -> 2 / sqrt(3 * 2)
    assert kendall_tau([3.0, 2.0, 1.0], [0, 0, 1]) == pytest.approx(2 / math.sqrt(6))
    assert kendall_tau([1.0, 1.0, 1.0], [0, 1, 2]) == 0.0  # undefined -> 0
    with pytest.raises(ValueError):
        kendall_tau([1.0, 2.0], [0])


def test_mean_kendall_tau():
    items = [([3.0, 2.0, 1.0], [0, 1, 2]), ([1.0, 2.0, 3.0], [0, 1, 2]),
             ([3.0, 1.0, 2.0], [0, 1, 2])]
    # (1 - 1 + 1/3) / 3 = 1/9
    assert mean_kendall_tau(items) == pytest.approx(1 / 9)


def test_reward_margin_stats():
    stats = reward_margin_stats(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([0.0, 1.0, 2.0]))
    # margins 1, 2, 3: mean 2, unbiased std 1
    assert stats == pytest.approx({"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0})


def test_calibration_hand_built_ece():
    ln3, ln19 = math.log(3.0), math.log(19.0)
    # p = sigmoid(d): ln3 -> 0.75 (conf .75, right), -ln3 -> 0.25 (conf .75, wrong),
    # ln19 -> 0.95 (conf .95, right). 5 bins of width 0.1 over [0.5, 1]:
    # bin 2 [0.7,0.8): conf .75, acc .5, n 2; bin 4 [0.9,1]: conf .95, acc 1, n 1
    # ECE = 2/3 * |0.5 - 0.75| + 1/3 * |1 - 0.95| = 1/6 + 0.05/3 = 0.183333
    out = calibration(torch.tensor([ln3, -ln3, ln19]), torch.zeros(3), n_bins=5)
    assert out["ece"] == pytest.approx(0.183333, abs=1e-6)
    assert out["bin_count"] == [0, 0, 2, 0, 1]
    assert out["bin_confidence"] == pytest.approx([0.0, 0.0, 0.75, 0.0, 0.95])
    assert out["bin_accuracy"] == pytest.approx([0.0, 0.0, 0.5, 0.0, 1.0])
    assert out["bin_edges"] == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9, 1.0])


def test_calibration_perfectly_calibrated_is_zero():
    ln3 = math.log(3.0)
    # four pairs at confidence 0.75, three right and one wrong -> accuracy 0.75
    out = calibration(torch.tensor([ln3, ln3, ln3, -ln3]), torch.zeros(4))
    assert out["ece"] == pytest.approx(0.0, abs=1e-6)  # float32 inputs
    assert sum(out["bin_count"]) == 4 and len(out["bin_count"]) == 10


def test_wilson_interval_hand_computed():
    from rlhf_dist.algo.metrics import wilson_interval

    # p = 0.85, n = 60, z = 1.96: centre = (0.85 + 1.9208/60) / (1 + 3.8416/60) = 0.88201 / 1.06403 = 0.82893;
    # half = 1.96 * sqrt(0.1275/60 + 3.8416/14400) / 1.06403 = 1.96 * 0.048885 / 1.06403 = 0.090051
    lo, hi = wilson_interval(51, 60)
    assert (lo, hi) == (pytest.approx(0.73888, abs=1e-4), pytest.approx(0.91898, abs=1e-4))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(10, 10)[1] == 1.0


def test_pairwise_accuracy_with_tie_labels_by_hand():
    # agreement = 1 - |1{c>r} + 0.5*1{c==r} - target| per pair
    chosen = torch.tensor([2.0, 0.0, 1.0, 1.0, 3.0])
    rejected = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0])
    target = torch.tensor([1.0, 1.0, 0.5, 0.5, 0.8])
    # win@1 -> 1; loss@1 -> 0; win@0.5 (tie label) -> 0.5, not 1 or 0; equal@0.5 -> 1; win@0.8 -> 0.8
    assert pairwise_accuracy(chosen, rejected, target) == pytest.approx((1 + 0 + 0.5 + 1 + 0.8) / 5)
    # a tie label scores the same whichever side the model prefers: it is not "chosen must win"
    assert pairwise_accuracy(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([0.5])) == 0.5
    assert pairwise_accuracy(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.5])) == 0.5
    # without targets: every label decisive, as before
    assert pairwise_accuracy(chosen, rejected) == pytest.approx((1 + 0 + 1 + 0.5 + 1) / 5)
    with pytest.raises(ValueError, match="target"):
        pairwise_accuracy(chosen, rejected, torch.ones(3))
