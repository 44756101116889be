"""Calls per API key and calendar month (UTC): monthly quotas and usage (services/core/usage.py).
Keys appear by their id (a SHA-256 prefix), never as the key.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "api_calls",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),  # 2026-12
        sa.Column("calls", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("api_calls")
