"""traffic: ingested files, per-minute and per-hour sketches, KPIs

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lorawatch.db.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingested_files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("ingested_at", lorawatch.db.types.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingested_files")),
        sa.UniqueConstraint("kind", "sha256", name=op.f("uq_ingested_files_kind_sha256")),
    )
    op.create_table(
        "traffic_hours",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("minute", lorawatch.db.types.UTCDateTime(), nullable=False),
        sa.Column("adapter", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("base_model", sa.String(length=200), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("latency_sketch", sa.LargeBinary(), nullable=False),
        sa.Column("ttft_sketch", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_traffic_hours")),
        sa.UniqueConstraint(
            "adapter", "version", "tenant", "minute", name=op.f("uq_traffic_hours_adapter_version_tenant_minute")
        ),
    )
    op.create_index("ix_traffic_hours_minute", "traffic_hours", ["minute"], unique=False)
    op.create_table(
        "traffic_minutes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("minute", lorawatch.db.types.UTCDateTime(), nullable=False),
        sa.Column("adapter", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("base_model", sa.String(length=200), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("latency_sketch", sa.LargeBinary(), nullable=False),
        sa.Column("ttft_sketch", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_traffic_minutes")),
        sa.UniqueConstraint(
            "adapter", "version", "tenant", "minute", name=op.f("uq_traffic_minutes_adapter_version_tenant_minute")
        ),
    )
    op.create_index("ix_traffic_minutes_minute", "traffic_minutes", ["minute"], unique=False)
    op.create_table(
        "kpi_values",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ts", lorawatch.db.types.UTCDateTime(), nullable=False),
        sa.Column("adapter", sa.String(length=200), nullable=False),
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("kpi", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("file_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["file_id"], ["ingested_files.id"], name=op.f("fk_kpi_values_file_id_ingested_files")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kpi_values")),
    )
    op.create_index("ix_kpi_values_lookup", "kpi_values", ["adapter", "kpi", "ts"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_kpi_values_lookup", table_name="kpi_values")
    op.drop_table("kpi_values")
    op.drop_index("ix_traffic_minutes_minute", table_name="traffic_minutes")
    op.drop_table("traffic_minutes")
    op.drop_index("ix_traffic_hours_minute", table_name="traffic_hours")
    op.drop_table("traffic_hours")
    op.drop_table("ingested_files")
