"""Row schemas: strict types, blank text, value ranges, ranking validity."""

import math

import pytest
from pydantic import ValidationError

from rlhf_dist.data.records import (
    RECORD_MODELS,
    ABFeedback,
    PreferencePair,
    RankedList,
    Rating,
    SFTExample,
    model_for,
)


def _error_fields(model, **kwargs):
    with pytest.raises(ValidationError) as exc:
        model(**kwargs)
    return [tuple(e["loc"]) for e in exc.value.errors()]


def test_valid_rows_and_defaults():
    pair = PreferencePair(prompt="p", chosen="c", rejected="r")
    assert (pair.weight, pair.target) == (1.0, 1.0)
    ab = ABFeedback(prompt="p", response_a="a", response_b="b", preference=2)
    assert (ab.confidence, ab.reasoning) == (1.0, "")
    assert PreferencePair(prompt="p", chosen="c", rejected="r", weight=2).weight == 2.0  # int accepted as float


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_blank_text_rejected(text):
    assert _error_fields(SFTExample, prompt="p", response=text) == [("response",)]


def test_number_or_bool_where_text_expected_is_error():
    assert _error_fields(SFTExample, prompt=5, response=True) == [("prompt",), ("response",)]


@pytest.mark.parametrize("value", [3, -1, True, False, "0", 1.0, None])
def test_preference_must_be_plain_0_1_2(value):
    with pytest.raises(ValidationError, match=r"must be 0 \(A\), 1 \(B\) or 2 \(tie\)"):
        ABFeedback(prompt="p", response_a="a", response_b="b", preference=value)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"weight": 0.0}, "weight"),
        ({"weight": -1.0}, "weight"),
        ({"target": 1.5}, "target"),
        ({"target": -0.1}, "target"),
        ({"target": math.nan}, "target"),
        ({"weight": True}, "weight"),
        ({"weight": "1.0"}, "weight"),
    ],
)
def test_pair_weight_and_target_ranges(kwargs, field):
    assert _error_fields(PreferencePair, prompt="p", chosen="c", rejected="r", **kwargs) == [(field,)]


def test_confidence_range_and_rating_finite():
    assert _error_fields(ABFeedback, prompt="p", response_a="a", response_b="b", preference=0, confidence=1.2) == [
        ("confidence",)
    ]
    assert _error_fields(Rating, prompt="p", response="r", reward=math.inf) == [("reward",)]
    assert Rating(prompt="p", response="r", reward=-3).reward == -3.0


@pytest.mark.parametrize("ranking", [[0, 1, 2], [2, 0, 1], [0, 0, 2], [0, 0, 1], [1, 0, 1], [0, 0, 0]])
def test_valid_rankings(ranking):
    assert RankedList(prompt="p", responses=["a", "b", "c"], ranking=ranking).ranking == ranking


@pytest.mark.parametrize("ranking", [[0, 2, 3], [1, 2, 3], [0, 1], [0, 1, 2, 3], [0, -1, 1], [0, 1, 3], [0, True, 2]])
def test_invalid_rankings(ranking):
    assert _error_fields(RankedList, prompt="p", responses=["a", "b", "c"], ranking=ranking)[0][0] == "ranking"


def test_ranked_needs_two_non_blank_responses():
    assert _error_fields(RankedList, prompt="p", responses=["a"], ranking=[0]) == [("responses",)]
    assert _error_fields(RankedList, prompt="p", responses=["a", " "], ranking=[0, 1]) == [("responses", 1)]


def test_unknown_field_forbidden_and_kind_map():
    assert _error_fields(SFTExample, prompt="p", response="r", extra="x") == [("extra",)]
    assert set(RECORD_MODELS) == {"sft", "prompt", "pair", "ab", "ranked", "rating", "comparison"}
    assert model_for("ranked") is RankedList
    with pytest.raises(ValueError, match="unknown record kind 'pairs'"):
        model_for("pairs")


def test_comparison_pair_gold_and_logprobs():
    from rlhf_dist.data.records import ComparisonPair

    pair = ComparisonPair(prompt="p", response_a="a", response_b="b", gold=1, logprobs_a=[-0.5], seed=3)
    assert (pair.gold, pair.logprobs_a, pair.logprobs_b) == (1, [-0.5], None)
    assert _error_fields(ComparisonPair, prompt="p", response_a="a", response_b="b", gold=3) == [("gold",)]
    assert _error_fields(ComparisonPair, prompt="p", response_a="a", response_b="b", gold=True) == [("gold",)]
    assert _error_fields(ComparisonPair, prompt="p", response_a="a", response_b="b", seed="7") == [("seed",)]
