"""Votes -> one A/B row (majority and soft targets), and soft targets through ab_to_pairs."""

import pytest

from rlhf_dist.data.pairs import ab_to_pairs
from rlhf_dist.feedback.aggregate import VoteRow, aggregate_votes


def _votes(*prefs, conf=(0.9, 0.7, 0.55)):
    return [VoteRow(p, c, f"r{i}") for i, (p, c) in enumerate(zip(prefs, conf))]


def test_majority_picks_the_most_frequent_choice():
    row = aggregate_votes("p", "a", "b", _votes(1, 1, 0))
    assert row.preference == 1 and row.p_a is None
    assert row.confidence == pytest.approx((0.9 + 0.7) / 2)  # mean of the agreeing votes
    assert row.reasoning.startswith("3 vote(s): A 1, B 2, tie 0")


def test_majority_with_as_many_a_as_b_is_a_tie():
    assert aggregate_votes("p", "a", "b", _votes(0, 1)).preference == 2
    assert aggregate_votes("p", "a", "b", _votes(0, 1, 2)).preference == 2


def test_soft_target_is_the_vote_fraction_with_ties_half():
    row = aggregate_votes("p", "a", "b", _votes(0, 0, 2), how="soft")
    assert row.p_a == pytest.approx(2.5 / 3) and row.preference == 0
    b_wins = aggregate_votes("p", "a", "b", _votes(1, 1, 0), how="soft")
    assert b_wins.p_a == pytest.approx(1 / 3) and b_wins.preference == 1
    even = aggregate_votes("p", "a", "b", _votes(0, 1), how="soft")
    assert even.p_a == 0.5 and even.preference == 2


def test_soft_rows_become_soft_bt_targets():
    rows = [aggregate_votes("p", "a", "b", _votes(0, 0, 1), how="soft"),
            aggregate_votes("q", "c", "d", _votes(1, 1, 0), how="soft"),
            aggregate_votes("r", "e", "f", _votes(0, 1), how="soft")]
    conv = ab_to_pairs(rows, tie_policy="half")
    assert [(p.chosen, p.rejected) for p in conv.pairs] == [("a", "b"), ("d", "c"), ("e", "f")]
    assert [p.target for p in conv.pairs] == pytest.approx([2 / 3, 2 / 3, 0.5])
    assert len(ab_to_pairs(rows, tie_policy="drop").pairs) == 2


def test_no_votes_or_unknown_rule_is_an_error():
    with pytest.raises(ValueError, match="at least one vote"):
        aggregate_votes("p", "a", "b", [])
    with pytest.raises(ValueError, match="majority"):
        aggregate_votes("p", "a", "b", _votes(0), how="mean")
