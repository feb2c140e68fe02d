"""content risk scores, annotations, gate verdicts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lorawatch.db.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gate_verdicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_version_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("compared_with", sa.String(length=200), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("ts", lorawatch.db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_gate_verdicts_adapter_version_id_adapter_versions"),
        ),
        sa.ForeignKeyConstraint(["run_id"], ["canary_runs.id"], name=op.f("fk_gate_verdicts_run_id_canary_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_verdicts")),
    )
    op.create_table(
        "risk_annotations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.String(length=200), nullable=False),
        sa.Column("adapter_version_id", sa.Integer(), nullable=False),
        sa.Column("verdict", sa.String(length=30), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("ts", lorawatch.db.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_risk_annotations_adapter_version_id_adapter_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["canary_runs.id"], name=op.f("fk_risk_annotations_run_id_canary_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_annotations")),
    )
    op.create_index(
        "ix_risk_annotations_sample", "risk_annotations", ["run_id", "prompt_id", "adapter_version_id"], unique=False
    )
    op.add_column("canary_base_outputs", sa.Column("toxicity", sa.Float(), nullable=True))
    op.add_column("canary_base_outputs", sa.Column("pii_leaks", sa.JSON(), nullable=True))
    op.add_column("canary_results", sa.Column("toxicity", sa.Float(), nullable=True))
    op.add_column("canary_results", sa.Column("pii_leaks", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("canary_results", "pii_leaks")
    op.drop_column("canary_results", "toxicity")
    op.drop_column("canary_base_outputs", "pii_leaks")
    op.drop_column("canary_base_outputs", "toxicity")
    op.drop_index("ix_risk_annotations_sample", table_name="risk_annotations")
    op.drop_table("risk_annotations")
    op.drop_table("gate_verdicts")
