"""The review queue: plate readings a person should check, and their decisions.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "reviews",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("reason", sa.String(16), nullable=False),  # review | audit
        sa.Column("status", sa.String(16), nullable=False, index=True),  # pending | done
        sa.Column("camera_id", sa.String(200), index=True),
        sa.Column("plate", sa.String(32), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("dscore", sa.Float, nullable=False),
        sa.Column("box", sa.JSON, nullable=False),
        sa.Column("candidates", sa.JSON, nullable=False),
        sa.Column("detector_model", sa.String(200), nullable=False),
        sa.Column("ocr_model", sa.String(200), nullable=False),
        sa.Column("photo_path", sa.String(500), nullable=False),
        sa.Column("crop_path", sa.String(500), nullable=False),
        sa.Column("decision", sa.String(16)),  # corrected | confirmed | not_a_plate | skipped
        sa.Column("corrected_plate", sa.String(32)),
        sa.Column("corrected_box", sa.JSON),
        sa.Column("decided_at", sa.DateTime(timezone=True)),
        sa.Column("reviewer", sa.String(64)),
    )


def downgrade() -> None:
    op.drop_table("reviews")
