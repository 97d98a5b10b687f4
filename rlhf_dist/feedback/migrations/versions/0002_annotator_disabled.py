"""Accounts an admin can disable: annotator.disabled_at (NULL while the account may log in).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("annotator") as batch:
        batch.add_column(sa.Column("disabled_at", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("annotator") as batch:
        batch.drop_column("disabled_at")
