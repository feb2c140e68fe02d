"""outbox: which flush holds a notification, failed messages, manual retries

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lorawatch.db.types

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("failed_at", lorawatch.db.types.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("retried_at", lorawatch.db.types.UTCDateTime(), nullable=True))
    with op.batch_alter_table("delivery_attempts") as batch:
        batch.add_column(sa.Column("permanent", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("delivery_attempts") as batch:
        batch.drop_column("permanent")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("retried_at")
        batch.drop_column("failed_at")
        batch.drop_column("claimed_by")
