"""Conversions of A/B feedback, rankings and ratings into preference pairs (hand-checked)."""

import json

import pytest

from rlhf_dist.data.pairs import ab_to_pairs, load_preference_pairs, ranked_to_pairs, ratings_to_pairs
from rlhf_dist.data.records import ABFeedback, PreferencePair, RankedList, Rating
from rlhf_dist.data.validate import DataValidationError


def _ab(pref, conf=1.0, a="A", b="B"):
    return ABFeedback(prompt="p", response_a=a, response_b=b, preference=pref, confidence=conf)


ROWS = [_ab(0, 0.9), _ab(1, 0.6), _ab(2, 0.8), _ab(0, 0.3), _ab(2, 0.2)]


def test_ab_ties_dropped_by_default():
    conv = ab_to_pairs(ROWS)
    assert [(p.chosen, p.rejected, p.target, p.weight) for p in conv.pairs] == [
        ("A", "B", 1.0, 1.0),
        ("B", "A", 1.0, 1.0),
        ("A", "B", 1.0, 1.0),
    ]
    assert (conv.dropped_ties, conv.dropped_low_confidence) == (2, 0)


def test_ab_ties_half_keeps_target_05():
    conv = ab_to_pairs(ROWS, tie_policy="half")
    assert [p.target for p in conv.pairs] == [1.0, 1.0, 0.5, 1.0, 0.5]
    assert conv.dropped_ties == 0


def test_ab_min_confidence_and_weights():
    conv = ab_to_pairs(ROWS, tie_policy="half", min_confidence=0.5, confidence_as_weight=True)
    assert [(p.chosen, p.weight, p.target) for p in conv.pairs] == [("A", 0.9, 1.0), ("B", 0.6, 1.0), ("A", 0.8, 0.5)]
    assert (conv.dropped_ties, conv.dropped_low_confidence) == (0, 2)
    # Low confidence is checked before ties: the 0.2 tie counts as low confidence.
    conv = ab_to_pairs(ROWS, min_confidence=0.5)
    assert (len(conv.pairs), conv.dropped_ties, conv.dropped_low_confidence) == (2, 1, 2)


def test_ab_confidence_as_target_hand_computed():
    conv = ab_to_pairs(ROWS, tie_policy="half", confidence_as_target=True)
    # 0.5 + c/2 for decisive rows (0.9 -> 0.95, 0.6 -> 0.8, 0.3 -> 0.65); ties stay 0.5; weights untouched
    assert [(p.chosen, p.target, p.weight) for p in conv.pairs] == [
        ("A", 0.95, 1.0), ("B", 0.8, 1.0), ("A", 0.5, 1.0), ("A", 0.65, 1.0), ("A", 0.5, 1.0)]
    soft = ABFeedback(prompt="p", response_a="A", response_b="B", preference=1, confidence=0.2, p_a=0.25)
    assert ab_to_pairs([soft], confidence_as_target=True).pairs[0].target == 0.75  # the soft vote wins


def test_ab_zero_confidence_cannot_become_zero_weight():
    conv = ab_to_pairs([_ab(0, 0.0)], confidence_as_weight=True)
    assert conv.pairs == [] and conv.dropped_low_confidence == 1


def test_ab_bad_options():
    with pytest.raises(ValueError, match="tie_policy"):
        ab_to_pairs(ROWS, tie_policy="keep")
    with pytest.raises(ValueError, match="min_confidence"):
        ab_to_pairs(ROWS, min_confidence=2.0)


def test_ranked_three_distinct_ranks_give_three_pairs():
    row = RankedList(prompt="p", responses=["mid", "best", "worst"], ranking=[1, 0, 2])
    pairs = ranked_to_pairs([row])
    assert {(p.chosen, p.rejected) for p in pairs} == {("best", "mid"), ("mid", "worst"), ("best", "worst")}
    assert len(pairs) == 3


def test_ranked_ties_produce_no_pair():
    row = RankedList(prompt="p", responses=["a", "b", "c"], ranking=[0, 0, 2])
    assert {(p.chosen, p.rejected) for p in ranked_to_pairs([row])} == {("a", "c"), ("b", "c")}


RATINGS = [
    Rating(prompt="p", response="r1", reward=1.0),
    Rating(prompt="p", response="r2", reward=3.0),
    Rating(prompt="p", response="r3", reward=3.0),
    Rating(prompt="q", response="s1", reward=0.0),
    Rating(prompt="q", response="s2", reward=0.5),
]


def test_ratings_pairs_grouped_by_prompt():
    pairs = ratings_to_pairs(RATINGS)
    # r2 == r3 is no preference; pairs never cross prompts.
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("p", "r2", "r1"),
        ("p", "r3", "r1"),
        ("q", "s2", "s1"),
    ]


def test_ratings_min_gap_is_inclusive():
    assert [(p.chosen, p.rejected) for p in ratings_to_pairs(RATINGS, min_gap=2.0)] == [("r2", "r1"), ("r3", "r1")]
    assert ratings_to_pairs(RATINGS, min_gap=2.5) == []
    with pytest.raises(ValueError, match="min_gap"):
        ratings_to_pairs(RATINGS, min_gap=-1)


def test_load_preference_pairs_ab_file_with_skip(tmp_path):
    path = tmp_path / "ab.jsonl"
    rows = [r.model_dump() for r in ROWS] + [{"prompt": "p", "response_a": "a", "response_b": "b", "preference": 5}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs, report = load_preference_pairs(path, "ab", on_error="skip", tie_policy="drop", min_confidence=0.5)
    assert all(isinstance(p, PreferencePair) for p in pairs) and len(pairs) == 2
    assert (report.load.n_rows, report.load.n_skipped) == (6, 1)
    assert (report.dropped_ties, report.dropped_low_confidence) == (1, 2)
    expected = f"{path}: kept 5 of 6 rows, skipped 1; 2 pairs; dropped 1 ties; dropped 2 low-confidence rows"
    assert report.summary() == expected
    with pytest.raises(DataValidationError, match=r"ab\.jsonl:6: preference:"):
        load_preference_pairs(path, "ab")


def test_load_preference_pairs_other_formats(tmp_path):
    path = tmp_path / "ratings.jsonl"
    path.write_text("\n".join(json.dumps(r.model_dump()) for r in RATINGS))
    pairs, report = load_preference_pairs(path, "rating", min_gap=2.0)
    assert len(pairs) == 2 and report.n_pairs == 2
    pair_path = tmp_path / "pairs.jsonl"
    pair_path.write_text(json.dumps({"prompt": "p", "chosen": "c", "rejected": "r", "target": 0.7}))
    assert load_preference_pairs(pair_path, "pair")[0][0].target == 0.7


def test_load_preference_pairs_rejects_options_that_do_not_apply(tmp_path):
    with pytest.raises(ValueError, match="min_gap applies to fmt='rating' only"):
        load_preference_pairs(tmp_path / "x.jsonl", "ab", min_gap=1.0)
    with pytest.raises(ValueError, match="apply to fmt='ab' only"):
        load_preference_pairs(tmp_path / "x.jsonl", "ranked", tie_policy="half")
    with pytest.raises(ValueError, match="fmt must be"):
        load_preference_pairs(tmp_path / "x.jsonl", "sft")
