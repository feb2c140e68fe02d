"""canary runs and monitor results

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lorawatch.db.types

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "canary_datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("n_prompts", sa.Integer(), nullable=False),
        sa.Column("segments", sa.JSON(), nullable=False),
        sa.Column("created_at", lorawatch.db.types.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canary_datasets")),
        sa.UniqueConstraint("sha256", name=op.f("uq_canary_datasets_sha256")),
    )
    op.create_table(
        "canary_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("adapters", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("device", sa.String(length=50), nullable=True),
        sa.Column("started_at", lorawatch.db.types.UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", lorawatch.db.types.UTCDateTime(), nullable=False),
        sa.Column("finished_at", lorawatch.db.types.UTCDateTime(), nullable=True),
        sa.Column("prompts_done", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_by", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("stats", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["base_model_id"], ["base_models.id"], name=op.f("fk_canary_runs_base_model_id_base_models")
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["canary_datasets.id"], name=op.f("fk_canary_runs_dataset_id_canary_datasets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canary_runs")),
    )
    op.create_index("ix_canary_runs_status", "canary_runs", ["status"], unique=False)
    op.create_table(
        "canary_base_outputs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.String(length=200), nullable=False),
        sa.Column("segment", sa.String(length=200), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("new_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["canary_runs.id"], name=op.f("fk_canary_base_outputs_run_id_canary_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canary_base_outputs")),
        sa.UniqueConstraint("run_id", "prompt_id", name=op.f("uq_canary_base_outputs_run_id_prompt_id")),
    )
    op.create_table(
        "canary_baselines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("adapter_version_id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("set_at", lorawatch.db.types.UTCDateTime(), nullable=False),
        sa.Column("set_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_canary_baselines_adapter_version_id_adapter_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["canary_datasets.id"], name=op.f("fk_canary_baselines_dataset_id_canary_datasets")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["canary_runs.id"], name=op.f("fk_canary_baselines_run_id_canary_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canary_baselines")),
        sa.UniqueConstraint(
            "adapter_version_id", "dataset_id", name=op.f("uq_canary_baselines_adapter_version_id_dataset_id")
        ),
    )
    op.create_table(
        "canary_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.String(length=200), nullable=False),
        sa.Column("segment", sa.String(length=200), nullable=False),
        sa.Column("adapter_version_id", sa.Integer(), nullable=False),
        sa.Column("adapter", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("scored_tokens", sa.Integer(), nullable=False),
        sa.Column("scored_on", sa.String(length=20), nullable=False),
        sa.Column("kl_mean", sa.Float(), nullable=False),
        sa.Column("kl_max", sa.Float(), nullable=False),
        sa.Column("js_mean", sa.Float(), nullable=False),
        sa.Column("top1_agreement", sa.Float(), nullable=False),
        sa.Column("ref_logprob_base", sa.Float(), nullable=False),
        sa.Column("ref_logprob_adapted", sa.Float(), nullable=False),
        sa.Column("ref_logprob_delta", sa.Float(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("new_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("tokens_per_s", sa.Float(), nullable=False),
        sa.Column("embedding_cosine_distance", sa.Float(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["adapter_version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_canary_results_adapter_version_id_adapter_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["canary_runs.id"], name=op.f("fk_canary_results_run_id_canary_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canary_results")),
        sa.UniqueConstraint(
            "run_id",
            "prompt_id",
            "adapter_version_id",
            name=op.f("uq_canary_results_run_id_prompt_id_adapter_version_id"),
        ),
    )
    op.create_index("ix_canary_results_version", "canary_results", ["adapter_version_id", "run_id"], unique=False)
    op.create_table(
        "monitor_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ts", lorawatch.db.types.UTCDateTime(), nullable=False),
        sa.Column("monitor", sa.String(length=100), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("adapter_version_id", sa.Integer(), nullable=True),
        sa.Column("adapter", sa.String(length=200), nullable=True),
        sa.Column("version", sa.String(length=128), nullable=True),
        sa.Column("base_model", sa.String(length=200), nullable=True),
        sa.Column("segment", sa.String(length=200), nullable=True),
        sa.Column("tenant", sa.String(length=200), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("breached", sa.Boolean(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["adapter_version_id"],
            ["adapter_versions.id"],
            name=op.f("fk_monitor_results_adapter_version_id_adapter_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["canary_runs.id"], name=op.f("fk_monitor_results_run_id_canary_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_results")),
    )
    op.create_index("ix_monitor_results_lookup", "monitor_results", ["monitor", "adapter", "ts"], unique=False)
    op.create_index("ix_monitor_results_run", "monitor_results", ["run_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_monitor_results_run", table_name="monitor_results")
    op.drop_index("ix_monitor_results_lookup", table_name="monitor_results")
    op.drop_table("monitor_results")
    op.drop_index("ix_canary_results_version", table_name="canary_results")
    op.drop_table("canary_results")
    op.drop_table("canary_baselines")
    op.drop_table("canary_base_outputs")
    op.drop_index("ix_canary_runs_status", table_name="canary_runs")
    op.drop_table("canary_runs")
    op.drop_table("canary_datasets")
