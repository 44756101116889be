"""The webhook outbox (services/plate_reader/webhook_outbox.py): one row per event and target,
kept until delivered or given up, so a restart or a receiver that is down loses nothing.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(40), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("lease_owner", sa.String(40)),
        sa.Column("lease_until", sa.Float),
        sa.Column("last_error", sa.String(300)),
        sa.Column("finished_at", sa.Float),
        sa.UniqueConstraint("event_id", "target", name="uq_webhook_outbox_event_target"),
    )
    # The delivery worker's question: which pending rows are due?
    op.create_index("ix_webhook_outbox_due", "webhook_outbox", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_outbox_lease", "webhook_outbox", ["lease_owner"])


def downgrade() -> None:
    op.drop_table("webhook_outbox")
