"""Adaptive overlap: campaign.max_votes (NULL: a fixed overlap) and pair.votes_wanted (its slots now).

Existing pairs keep their campaign's overlap. Both columns are added in place (no table rebuild on
SQLite, which would drop the tables' CHECK constraints): votes_wanted arrives with a server default of 1
and is then set from the campaign; the service always writes it explicitly.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column("campaign", sa.Column("max_votes", sa.Integer, nullable=True))
    op.add_column("pair", sa.Column("votes_wanted", sa.Integer, nullable=False, server_default="1"))
    op.execute("UPDATE pair SET votes_wanted = (SELECT campaign.overlap FROM campaign "
               "WHERE campaign.id = pair.campaign_id)")


def downgrade() -> None:
    with op.batch_alter_table("pair") as batch:
        batch.drop_column("votes_wanted")
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("max_votes")
