"""Active-selection math against hand-computed values."""

import math

import pytest
import torch

from rlhf_dist.algo.selection import (
    bt_probability,
    disagreement_rank,
    ensemble_probabilities,
    fit_bt_heads,
    uncertainty_rank,
)
from rlhf_dist.eval.experiments.active_selection import votes_to_reach


def test_bt_probability_and_uncertainty_rank():
    p = bt_probability(torch.tensor([0.0, math.log(3.0)]), torch.tensor([0.0, 0.0]))
    assert p.tolist() == pytest.approx([0.5, 0.75])  # sigmoid(log 3) = 3 / 4
    assert uncertainty_rank(torch.tensor([0.5, 0.9, 0.2])).tolist() == pytest.approx([0.0, 0.4, 0.3])


def test_disagreement_ranks_the_disputed_pair_first():
    heads = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    diff = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    probs = ensemble_probabilities(heads, diff)  # pair 1: sigmoid(1), sigmoid(-1); pair 2: 0.5, 0.5
    s = 1 / (1 + math.exp(-1))
    assert probs.flatten().tolist() == pytest.approx([s, 0.5, 1 - s, 0.5])
    rank = disagreement_rank(heads, diff)
    assert rank.tolist() == pytest.approx([-(s - 0.5), 0.0])  # population std of {s, 1 - s} is s - 0.5
    assert rank.argsort().tolist() == [0, 1]


def test_fit_bt_heads_learns_the_preferred_direction():
    gen = torch.Generator().manual_seed(0)
    diff = torch.randn(200, 3, generator=gen)
    target = (diff[:, 0] > 0).float()  # feature 0 decides
    head = fit_bt_heads(diff, target, n_heads=1, seed=0, bootstrap=False)[0]
    assert head[0] > 0 and head[0].abs() > 3 * head[1:].abs().max()
    heads = fit_bt_heads(diff, target, n_heads=4, seed=0)
    assert heads.shape == (4, 3) and not torch.allclose(heads[0], heads[1])  # bootstrap resamples differ


def test_votes_to_reach_is_the_first_count_at_target():
    curve = [(10, 0.7), (20, 0.82), (30, 0.8), (40, 0.9)]
    assert votes_to_reach(curve, 0.8) == 20 and votes_to_reach(curve, 0.95) is None
