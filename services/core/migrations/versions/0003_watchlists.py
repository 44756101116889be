"""Watchlists: named lists of plates with a note and tags each (services/plate_reader/watchlists.py).
`watchlist_state.version` goes up with every change, so each server process reloads a changed
list by reading one number.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "watchlists",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("lookalikes", sa.Boolean, nullable=False),
        sa.Column("max_distance", sa.Integer, nullable=False),
        sa.Column("substitutions", sa.Boolean, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),  # this list's changes
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "watchlist_plates",
        sa.Column("list_name", sa.String(64), primary_key=True),
        sa.Column("plate", sa.String(16), primary_key=True),  # A-Z0-9
        sa.Column("note", sa.String(500)),
        sa.Column("tags", sa.JSON, nullable=False),
    )
    state = op.create_table(
        "watchlist_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),  # every list's changes
    )
    op.bulk_insert(state, [{"id": 1, "version": 0}])


def downgrade() -> None:
    op.drop_table("watchlist_state")
    op.drop_table("watchlist_plates")
    op.drop_table("watchlists")
