"""The `feedback:` section: the human-feedback service (rlhf-dist feedback ...)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlhf_dist.config.schema_parts import Strict


class FeedbackConfig(Strict):
    host: str = Field("127.0.0.1", min_length=1, description="Address `rlhf-dist feedback serve` listens on "
                      "(127.0.0.1: this machine only; 0.0.0.0: every interface, put TLS in front).")
    port: int = Field(8765, ge=1, le=65_535, description="TCP port of the feedback service.")
    db_url: str | None = Field(
        None, description="SQLAlchemy URL of the feedback database. None: a SQLite file (WAL mode) at "
        "<run.output_dir>/feedback.sqlite. Teams: 'postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB'.")
    overlap: int = Field(1, ge=1, le=100, description="Votes wanted per pair, each from a different annotator "
                         "(new campaigns take this value).")
    lease_seconds: float = Field(600.0, gt=0, le=604_800, description="How long a pair handed to an annotator "
                                 "stays reserved; an expired lease returns the pair to the queue.")
    max_body_kb: int = Field(64, ge=1, le=1_048_576, description="Largest request body the API accepts (413 above).")
    max_import_mb: int = Field(64, ge=1, le=65_536, description="Largest pair file an admin may upload through "
                               "the API or admin page (413 above).")
    rate_limit_per_minute: int = Field(600, ge=0, le=1_000_000, description="Requests per minute per token "
                                       "(429 above); 0 disables the limit.")
    admin_token_env: str = Field("RLHF_DIST_FEEDBACK_ADMIN_TOKEN", min_length=1, description="Environment "
                                 "variable whose value, when set, is an admin token of the service (user 'admin').")
    aggregate: Literal["majority", "soft"] = Field(
        "majority", description="How `feedback export` turns several votes on one pair into one A/B row: the "
        "majority choice (equal A and B counts make a tie), or a soft target p_a = (votes A + ties / 2) / votes.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="uvicorn's log level for `feedback serve`.")
