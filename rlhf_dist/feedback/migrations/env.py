"""Alembic environment: run by rlhf_dist.feedback.db.migrate on an open connection."""

from alembic import context

from rlhf_dist.feedback.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
