"""Row schemas for every dataset kind the framework reads.

Each model validates one row.  Types are strict (a number where text is
expected is an error, a bool is never an int) and unknown columns are
rejected, because silently coercing or ignoring data hides mistakes in
user files.  Loaders may opt into ignoring extra columns
(``allow_extra=True``), which strips them before validation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or whitespace-only")
    return value


# Text that must carry content; strict so 5 or True are not turned into "5".
Text = Annotated[StrictStr, AfterValidator(_non_blank)]
# Strict floats still accept ints (1 -> 1.0) but reject bools and strings.
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class _Record(BaseModel):
    """Base: frozen, strict, unknown columns forbidden."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SFTExample(_Record):
    """A prompt with the demonstration response to imitate."""

    prompt: Text
    response: Text


class PromptOnly(_Record):
    """A prompt for generation (PPO/GRPO rollouts, evaluation)."""

    prompt: Text


class PreferencePair(_Record):
    """A prompt with a preferred and a dispreferred response.

    ``target`` is the probability that ``chosen`` is preferred (1.0 = sure,
    0.5 = tie) and ``weight`` scales the example's loss.
    """

    prompt: Text
    chosen: Text
    rejected: Text
    weight: Annotated[FiniteFloat, Field(gt=0)] = 1.0
    target: Annotated[FiniteFloat, Field(ge=0, le=1)] = 1.0

    @model_validator(mode="after")
    def _two_responses(self) -> "PreferencePair":
        # the same text on both sides carries no preference: the BT loss could only push it to a tie
        if self.chosen == self.rejected:
            raise ValueError(f"chosen and rejected are the same text ({self.chosen[:40]!r}); a pair needs two "
                             "different responses")
        return self


class ABFeedback(_Record):
    """A judgement between two responses: 0 = A better, 1 = B better, 2 = tie."""

    prompt: Text
    response_a: Text
    response_b: Text
    preference: int
    confidence: Annotated[FiniteFloat, Field(ge=0, le=1)] = 1.0
    reasoning: StrictStr = ""
    # Soft label from several votes: P(A preferred), ties counting half (`feedback export` with
    # feedback.aggregate: soft). When set, it is the pair's BT target instead of 1.0.
    p_a: Annotated[FiniteFloat, Field(ge=0, le=1)] | None = None

    @field_validator("preference", mode="before")
    @classmethod
    def _check_preference(cls, value: Any) -> int:
        # One explicit message for every bad value, bools included (True == 1).
        if type(value) is not int or value not in (0, 1, 2):
            raise ValueError(f"must be 0 (A), 1 (B) or 2 (tie), got {value!r}")
        return value


class ComparisonPair(_Record):
    """An unlabelled pair for people to judge (`rlhf-dist feedback import`).

    ``source_*`` say where each response came from (model dir or checkpoint id); ``gold`` is
    the known answer (0 = A, 1 = B, 2 = tie) for quality-control pairs.
    """

    prompt: Text
    response_a: Text
    response_b: Text
    source_a: StrictStr = ""
    source_b: StrictStr = ""
    sampling: dict[str, Any] | None = None
    seed: Annotated[int, Field(strict=True)] | None = None
    gold: int | None = None
    # per-token log-probs of each response under the policy that sampled it (`feedback generate`)
    logprobs_a: list[FiniteFloat] | None = None
    logprobs_b: list[FiniteFloat] | None = None

    @field_validator("gold", mode="before")
    @classmethod
    def _check_gold(cls, value: Any) -> int | None:
        if value is not None and (type(value) is not int or value not in (0, 1, 2)):
            raise ValueError(f"must be 0 (A), 1 (B), 2 (tie) or absent, got {value!r}")
        return value


def _is_valid_ranking(ranks: list[int]) -> bool:
    """True when every rank is at most the number of strictly better items.

    Accepts plain permutations of 0..n-1, competition ties ([0, 0, 2]) and
    dense ties ([0, 0, 1]); rejects negatives, gaps ([0, 2]) and no best item.
    """
    return all(0 <= r <= sum(1 for o in ranks if o < r) for r in ranks)


class RankedList(_Record):
    """Several responses to one prompt; ``ranking[i]`` is the rank of ``responses[i]``, 0 = best."""

    prompt: Text
    responses: Annotated[list[Text], Field(min_length=2)]
    ranking: list[Annotated[int, Field(strict=True)]]

    @field_validator("ranking")
    @classmethod
    def _check_ranking(cls, ranks: list[int], info: ValidationInfo) -> list[int]:
        responses = info.data.get("responses")
        # If responses already failed validation, only the rank values are checked.
        if responses is not None and len(ranks) != len(responses):
            raise ValueError(f"has {len(ranks)} ranks for {len(responses)} responses")
        if not _is_valid_ranking(ranks):
            raise ValueError(
                f"must give each response its rank (0 = best, ties share a rank, no gaps), got {ranks}"
            )
        return ranks


class Rating(_Record):
    """A scalar reward given to one response."""

    prompt: Text
    response: Text
    reward: FiniteFloat


RecordKind = Literal["sft", "prompt", "pair", "ab", "ranked", "rating", "comparison"]

RECORD_MODELS: dict[str, type[BaseModel]] = {
    "sft": SFTExample,
    "prompt": PromptOnly,
    "pair": PreferencePair,
    "ab": ABFeedback,
    "ranked": RankedList,
    "rating": Rating,
    "comparison": ComparisonPair,
}


def model_for(kind: str) -> type[BaseModel]:
    """Return the row model for ``kind``, with a clear error for unknown kinds."""
    try:
        return RECORD_MODELS[kind]
    except KeyError:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {sorted(RECORD_MODELS)}") from None
