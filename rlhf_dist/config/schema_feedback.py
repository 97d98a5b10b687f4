"""The `feedback:` section: the human-feedback service (rlhf-dist feedback ...)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from rlhf_dist.config.schema_parts import Strict


class SimulatedAnnotatorsConfig(Strict):
    """Rule-based stand-ins for people: in-process (`feedback.source: simulated`) or HTTP clients of the
    service (`service-simulated`), judging by a rule the reward model never sees."""

    rule: Literal["sentiment", "length", "lowercase", "vowel"] = Field("sentiment", description="What the simulated "
                                                               "annotators prefer.")
    count: int = Field(3, ge=1, le=1000, description="Simulated annotators (HTTP clients) in service-simulated mode.")
    noise: float = Field(0.0, ge=0.0, le=0.5, description="Probability an annotator flips a decisive label.")
    tie_margin: float = Field(0.0, ge=0.0, le=10.0, description="Rule scores this close (or closer) are a tie.")
    tie_rate: float = Field(0.0, ge=0.0, le=1.0, description="Probability an annotator answers 'tie' whatever it sees.")
    position_bias: float = Field(0.0, ge=0.0, le=1.0, description="Probability an annotator picks the response on "
                                 "the left whatever it says (service-simulated: the page's sides are random).")


class AdaptiveOverlapConfig(Strict):
    """More votes where people disagree (Label Studio's "assign an additional annotator on low agreement",
    Scale's consensus): a pair whose votes split is handed out again until it has `max_votes`."""

    max_votes: int | None = Field(
        None, ge=1, le=100, description="Votes a pair of a new training campaign may get when its votes split "
        "(they do not all prefer the same response; any tie vote counts as a split): as soon as one does, the "
        "pair stays in the queue until it has this many, each from a different annotator; pairs whose first "
        "feedback.overlap votes agree leave with feedback.overlap. Decided in the transaction that records "
        "the vote. At least feedback.overlap; None: off (every pair gets exactly feedback.overlap). "
        "Evaluation campaigns keep a fixed overlap, so every prompt weighs the same in the win rate.")


class FeedbackConfig(Strict):
    host: str = Field("127.0.0.1", min_length=1, description="Address `rlhf-dist feedback serve` listens on "
                      "(127.0.0.1: this machine only; 0.0.0.0: every interface, put TLS in front).")
    port: int = Field(8765, ge=1, le=65_535, description="TCP port of the feedback service.")
    db_url: str | None = Field(
        None, description="SQLAlchemy URL of the feedback database. None: a SQLite file (WAL mode) at "
        "<run.output_dir>/feedback.sqlite. Teams: 'postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB'.")
    overlap: int = Field(1, ge=1, le=100, description="Votes wanted per pair, each from a different annotator "
                         "(new campaigns take this value).")
    adaptive_overlap: AdaptiveOverlapConfig = Field(default_factory=AdaptiveOverlapConfig,
                                                    description="Extra votes for pairs whose votes split.")
    lease_seconds: float = Field(600.0, gt=0, le=604_800, description="How long a pair handed to an annotator "
                                 "stays reserved; an expired lease returns the pair to the queue.")
    max_body_kb: int = Field(64, ge=1, le=1_048_576, description="Largest request body the API accepts (413 above).")
    max_import_mb: int = Field(64, ge=1, le=65_536, description="Largest pair file an admin may upload through "
                               "the API or admin page (413 above).")
    rate_limit_per_minute: int = Field(600, ge=0, le=1_000_000, description="Requests per minute per token "
                                       "(429 above); 0 disables the limit.")
    login_failures_per_minute: int = Field(20, ge=0, le=1_000_000, description="Wrong tokens one client address "
                                           "may send within a minute; past that every request from it gets 429 "
                                           "until the minute is over (behind a proxy on this machine the address "
                                           "is X-Forwarded-For's); 0 disables the limit.")
    admin_token_env: str = Field("RLHF_DIST_FEEDBACK_ADMIN_TOKEN", min_length=1, description="Environment "
                                 "variable whose value, when set, is an admin token of the service (user 'admin'), "
                                 "valid only while the variable is set (never stored); at least 32 characters.")
    aggregate: Literal["majority", "soft"] = Field(
        "majority", description="How `feedback export` turns several votes on one pair into one A/B row: the "
        "majority choice (equal A and B counts make a tie), or a soft target p_a = (votes A + ties / 2) / votes.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="uvicorn's log level for `feedback serve`.")
    source: Literal["simulated", "store", "service", "service-simulated"] = Field(
        "simulated", description="Where a pipeline round's preference labels come from: 'simulated' (a rule "
        "annotator in the trainer's process), 'store' (whatever is already in the feedback database, e.g. from "
        "the seed API), 'service' (pairs from the current policy go to a campaign; the round waits for people's "
        "votes), 'service-simulated' (as 'service', with the service started on loopback and simulated "
        "annotators voting through its HTTP API).")
    votes_per_round: int | None = Field(None, ge=1, le=10_000_000, description="Votes a service round waits for "
                                        "(at most the votes its pairs are planned to get). None: until every pair "
                                        "of the round's campaign is settled: its overlap, or "
                                        "adaptive_overlap.max_votes where its votes split.")
    wait_timeout_s: float = Field(86_400.0, gt=0, description="A service round that has not collected its votes by "
                                  "then fails (restart the pipeline to keep waiting: the pairs are kept).")
    selection: Literal["random", "uncertainty", "disagreement"] = Field(
        "random", description="Which generated pairs people see first: in generation order ('random'), those the "
        "current reward model is least sure about (P(A>B) nearest 0.5), or those an ensemble of reward heads "
        "disagrees on most.")
    human_eval_prompts: int = Field(0, ge=0, le=1_000_000, description="After the last round of a service "
                                    "pipeline: a blind evaluation campaign on this many held-out prompts (the "
                                    "aligned policy against the starting one); 0 = none. `rlhf-dist eval --human` "
                                    "does the same by hand.")
    gold_path: str | None = Field(None, description="Quality-control pairs with known answers (the import format "
                                  "with a 'gold' column: 0 = A, 1 = B, 2 = tie), mixed into generated campaigns.")
    gold_rate: float = Field(0.0, ge=0.0, le=0.5, description="Gold pairs added to a generated campaign, as a "
                             "fraction of its generated pairs (needs gold_path).")
    min_reliability: float = Field(0.0, ge=0.0, le=1.0, description="Annotators whose reliability (gold accuracy, "
                                   "else agreement with the others' majority) is below this are flagged.")
    unreliable: Literal["keep", "downweight", "drop"] = Field(
        "keep", description="What an export does with flagged annotators' votes: keep them, scale their confidence "
        "by their reliability (a BT weight with data.confidence_as_weight), or drop them.")
    simulated: SimulatedAnnotatorsConfig = Field(default_factory=SimulatedAnnotatorsConfig,
                                                 description="Simulated annotators for tests and demos.")

    @field_validator("adaptive_overlap")
    @classmethod
    def _max_votes_at_least_overlap(cls, value: AdaptiveOverlapConfig, info: ValidationInfo) -> AdaptiveOverlapConfig:
        overlap = info.data.get("overlap")
        if value.max_votes is not None and overlap is not None and value.max_votes < overlap:
            raise ValueError(f"max_votes ({value.max_votes}) must be at least feedback.overlap ({overlap}); "
                             "None turns adaptive overlap off")
        return value
