"""The feedback database: campaigns of pairs, leased assignments, votes, annotators, snapshots.

Correctness lives in constraints, not in Python checks:
- uq_assignment_slot: a pair has `votes_wanted` slots (0..votes_wanted-1) and each slot holds at most
  one live assignment, so concurrent annotators can never push a pair past its limit. votes_wanted
  starts at the campaign's overlap and only grows (to max_votes, when the pair's votes split), in
  the transaction that records the vote, with the pair's row locked (queue.py);
- uq_assignment_annotator / uq_vote_annotator: nobody is handed, or votes on, the same pair twice;
- uq_vote_request: a retried POST with the same request_id finds the first vote.
The Alembic migrations in migrations/versions/ create exactly these tables.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    Index,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Annotator(Base):
    __tablename__ = "annotator"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(20), CheckConstraint("role IN ('admin', 'annotator')", name="ck_role"))
    # sha256 of the token; NULL for in-process annotators (seed API, simulated) that never log in, for
    # disabled accounts, and for user 'admin', whose token lives only in the environment (admin.py)
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    disabled_at: Mapped[float | None] = mapped_column(Float)  # set by `annotator disable` (migration 0002)


class Campaign(Base):
    __tablename__ = "campaign"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(20), CheckConstraint("kind IN ('training', 'evaluation')", name="ck_kind"))
    overlap: Mapped[int] = mapped_column(Integer, CheckConstraint("overlap >= 1", name="ck_overlap"))
    # feedback.adaptive_overlap.max_votes when the campaign was created; None: a fixed overlap (migration 0003)
    max_votes: Mapped[int | None] = mapped_column(Integer)
    round_index: Mapped[int | None] = mapped_column(Integer)  # pipeline round that made it, if any
    created_at: Mapped[float] = mapped_column(Float)


class Pair(Base):
    __tablename__ = "pair"
    __table_args__ = (Index("ix_pair_queue", "campaign_id", "complete", "queue_rank", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"), index=True)
    prompt: Mapped[str] = mapped_column(Text)
    response_a: Mapped[str] = mapped_column(Text)
    response_b: Mapped[str] = mapped_column(Text)
    source_a: Mapped[str] = mapped_column(Text, default="")  # model dir or checkpoint id
    source_b: Mapped[str] = mapped_column(Text, default="")
    sampling_json: Mapped[str | None] = mapped_column(Text)  # sampling settings, JSON
    seed: Mapped[int | None] = mapped_column(Integer)
    logprobs_json: Mapped[str | None] = mapped_column(Text)  # {"a": [...], "b": [...]} per-token log-probs
    gold: Mapped[int | None] = mapped_column(Integer, CheckConstraint("gold IN (0, 1, 2)", name="ck_gold"))
    queue_rank: Mapped[float] = mapped_column(Float, default=0.0)  # lower is handed out first
    # votes so far, votes planned (the campaign's overlap; max_votes once its votes split) and whether it
    # has them, kept in step with the vote table in the same transaction: the queue walks ix_pair_queue
    # over open pairs only, in hand-out order
    votes_done: Mapped[int] = mapped_column(Integer, default=0)
    votes_wanted: Mapped[int] = mapped_column(Integer)  # migration 0003
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)


class Assignment(Base):
    """One pair leased to one annotator. status: leased -> done | skipped | expired (slot freed)."""

    __tablename__ = "assignment"
    __table_args__ = (
        UniqueConstraint("pair_id", "slot", name="uq_assignment_slot"),
        UniqueConstraint("pair_id", "annotator_id", name="uq_assignment_annotator"),
        CheckConstraint("status IN ('leased', 'done', 'skipped', 'expired')", name="ck_status"),
        # a live assignment (leased or done) holds a slot; a released one holds none
        CheckConstraint("(slot IS NULL) = (status IN ('skipped', 'expired'))", name="ck_slot_status"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pair.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotator.id"), index=True)
    slot: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(10))
    left_is_a: Mapped[bool] = mapped_column(Boolean)  # which response the page showed on the left
    leased_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class Vote(Base):
    __tablename__ = "vote"
    __table_args__ = (
        UniqueConstraint("pair_id", "annotator_id", name="uq_vote_annotator"),
        UniqueConstraint("annotator_id", "request_id", name="uq_vote_request"),
        CheckConstraint("preference IN (0, 1, 2)", name="ck_preference"),
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="ck_confidence"),
        Index("ix_vote_campaign_annotator", "campaign_id", "annotator_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id"), unique=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pair.id", ondelete="CASCADE"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("annotator.id"), index=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))  # the pair's, copied
    choice: Mapped[str] = mapped_column(String(5))  # as clicked: left | right | tie
    left_is_a: Mapped[bool] = mapped_column(Boolean)
    preference: Mapped[int] = mapped_column(Integer)  # resolved: 0 = A, 1 = B, 2 = tie
    confidence: Mapped[float] = mapped_column(Float)
    reasoning: Mapped[str] = mapped_column(Text, default="")
    seconds_spent: Mapped[float] = mapped_column(Float)
    request_id: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[float] = mapped_column(Float)


class Snapshot(Base):
    """One `feedback export`: the votes up to max_vote_id of a campaign, aggregated."""

    __tablename__ = "snapshot"
    __table_args__ = (UniqueConstraint("campaign_id", "version", name="uq_snapshot_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaign.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    max_vote_id: Mapped[int] = mapped_column(Integer)
    aggregate: Mapped[str] = mapped_column(String(20))
    n_votes: Mapped[int] = mapped_column(Integer)
    n_rows: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
