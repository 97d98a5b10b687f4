"""The feedback service's first schema: annotators, campaigns, pairs, assignments, votes, snapshots.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "annotator",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("role", sa.String(20), sa.CheckConstraint("role IN ('admin', 'annotator')", name="ck_role"),
                  nullable=False),
        sa.Column("token_hash", sa.String(64), unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "campaign",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("kind", sa.String(20), sa.CheckConstraint("kind IN ('training', 'evaluation')", name="ck_kind"),
                  nullable=False),
        sa.Column("overlap", sa.Integer, sa.CheckConstraint("overlap >= 1", name="ck_overlap"), nullable=False),
        sa.Column("round_index", sa.Integer),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "pair",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("response_a", sa.Text, nullable=False),
        sa.Column("response_b", sa.Text, nullable=False),
        sa.Column("source_a", sa.Text, nullable=False),
        sa.Column("source_b", sa.Text, nullable=False),
        sa.Column("sampling_json", sa.Text),
        sa.Column("seed", sa.Integer),
        sa.Column("logprobs_json", sa.Text),
        sa.Column("gold", sa.Integer, sa.CheckConstraint("gold IN (0, 1, 2)", name="ck_gold")),
        sa.Column("queue_rank", sa.Float, nullable=False),
        sa.Column("votes_done", sa.Integer, nullable=False),
        sa.Column("complete", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Index("ix_pair_queue", "campaign_id", "complete", "queue_rank", "id"),
    )
    op.create_table(
        "assignment",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("pair_id", sa.Integer, sa.ForeignKey("pair.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotator.id"), nullable=False, index=True),
        sa.Column("slot", sa.Integer),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("left_is_a", sa.Boolean, nullable=False),
        sa.Column("leased_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
        sa.UniqueConstraint("pair_id", "slot", name="uq_assignment_slot"),
        sa.UniqueConstraint("pair_id", "annotator_id", name="uq_assignment_annotator"),
        sa.CheckConstraint("status IN ('leased', 'done', 'skipped', 'expired')", name="ck_status"),
        sa.CheckConstraint("(slot IS NULL) = (status IN ('skipped', 'expired'))", name="ck_slot_status"),
    )
    op.create_table(
        "vote",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("assignment_id", sa.Integer, sa.ForeignKey("assignment.id"), nullable=False, unique=True),
        sa.Column("pair_id", sa.Integer, sa.ForeignKey("pair.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotator.id"), nullable=False, index=True),
        sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False),
        sa.Column("choice", sa.String(5), nullable=False),
        sa.Column("left_is_a", sa.Boolean, nullable=False),
        sa.Column("preference", sa.Integer, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("reasoning", sa.Text, nullable=False),
        sa.Column("seconds_spent", sa.Float, nullable=False),
        sa.Column("request_id", sa.String(100), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("pair_id", "annotator_id", name="uq_vote_annotator"),
        sa.UniqueConstraint("annotator_id", "request_id", name="uq_vote_request"),
        sa.CheckConstraint("preference IN (0, 1, 2)", name="ck_preference"),
        sa.CheckConstraint("confidence >= 0 AND confidence <= 1", name="ck_confidence"),
        sa.Index("ix_vote_campaign_annotator", "campaign_id", "annotator_id"),
    )
    op.create_table(
        "snapshot",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("campaign_id", sa.Integer, sa.ForeignKey("campaign.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("max_vote_id", sa.Integer, nullable=False),
        sa.Column("aggregate", sa.String(20), nullable=False),
        sa.Column("n_votes", sa.Integer, nullable=False),
        sa.Column("n_rows", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("campaign_id", "version", name="uq_snapshot_version"),
    )


def downgrade() -> None:
    for table in ("snapshot", "vote", "assignment", "pair", "campaign", "annotator"):
        op.drop_table(table)
