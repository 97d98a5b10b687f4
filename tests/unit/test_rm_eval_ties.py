"""RM evaluation with tie labels (target 0.5), hand-computed with a scorer whose score is the first token id."""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.data.tokenize import EncodedExample, EncodedPair
from rlhf_dist.stages.reward import evaluate_reward_model


class FirstTokenScore(torch.nn.Module):
    """score(sequence) = its first token id: scores chosen by hand in the test."""

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return ids[:, 0].float()


def pair(chosen: int, rejected: int, target: float) -> EncodedPair:
    return EncodedPair(EncodedExample([chosen, 1], 1), EncodedExample([rejected, 1], 1), target=target)


def test_tie_pairs_are_scored_as_ties_not_as_wins_of_chosen():
    examples = [pair(5, 3, 1.0), pair(2, 4, 1.0), pair(3, 7, 0.5), pair(6, 6, 0.5)]
    m = evaluate_reward_model(FirstTokenScore(), examples, pad_id=0, batch_size=3)
    # per pair 1 - |1{c>r} + 0.5*1{c==r} - t|: win@1 -> 1, loss@1 -> 0, loss@0.5 -> 0.5, equal@0.5 -> 1
    assert m["accuracy"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    # decisive pairs only: 1 win, 1 loss
    assert m["accuracy_decisive"] == pytest.approx(0.5)
    assert m["n_pairs"] == 4 and m["n_tie_pairs"] == 2
    assert m["tie_abs_margin"] == pytest.approx((4 + 0) / 2)
    # tau over the decisive pairs: +1 and -1; margins 2 and -2
    assert m["kendall_tau"] == pytest.approx(0.0) and m["margin_mean"] == pytest.approx(0.0)


def test_all_decisive_is_the_plain_accuracy():
    m = evaluate_reward_model(FirstTokenScore(), [pair(5, 3, 1.0), pair(4, 4, 1.0)], pad_id=0)
    assert m["accuracy"] == pytest.approx(0.75) and m["n_tie_pairs"] == 0 and m["tie_abs_margin"] == 0.0
