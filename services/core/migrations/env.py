"""Alembic's entry point: migrations run on the connection database.upgrade() hands over."""

from alembic import context

context.configure(connection=context.config.attributes["connection"], target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
