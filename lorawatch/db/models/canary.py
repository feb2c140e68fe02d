"""Canary tables: datasets, runs, per-(prompt, adapter) results, base outputs, baselines,
and the monitor results every monitor writes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lorawatch.db.models.base import Base
from lorawatch.db.types import utcnow


class CanaryDatasetRecord(Base):
    """A canary dataset, identified by the sha256 of its content."""

    __tablename__ = "canary_datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    n_prompts: Mapped[int] = mapped_column(Integer)
    segments: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CanaryRun(Base):
    """One canary run over a dataset, a base and a set of adapter versions.

    ``status`` is running until every (prompt, adapter) result is stored; a killed run stays
    running (its heartbeat stops) and ``--resume`` completes it.
    """

    __tablename__ = "canary_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("canary_datasets.id"))
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id"))
    status: Mapped[str] = mapped_column(String(20), default="running")
    adapters: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    device: Mapped[str | None] = mapped_column(String(50))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    prompts_done: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    started_by: Mapped[str] = mapped_column(String(200))
    host: Mapped[str | None] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (Index("ix_canary_runs_status", "status"),)


class CanaryBaseOutput(Base):
    """The base model's greedy output for one prompt in one run (computed once per prompt)."""

    __tablename__ = "canary_base_outputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("canary_runs.id", ondelete="CASCADE"))
    prompt_id: Mapped[str] = mapped_column(String(200))
    segment: Mapped[str] = mapped_column(String(200))
    output: Mapped[str] = mapped_column(Text)
    new_tokens: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    toxicity: Mapped[float | None] = mapped_column(Float)
    pii_leaks: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)

    __table_args__ = (UniqueConstraint("run_id", "prompt_id"),)


class CanaryResult(Base):
    """Per (prompt, adapter version) in a run: logit drift, outputs, latency, embedding drift."""

    __tablename__ = "canary_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("canary_runs.id", ondelete="CASCADE"))
    prompt_id: Mapped[str] = mapped_column(String(200))
    segment: Mapped[str] = mapped_column(String(200))
    adapter_version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id"))
    adapter: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(128))
    scored_tokens: Mapped[int] = mapped_column(Integer)
    scored_on: Mapped[str] = mapped_column(String(20))
    kl_mean: Mapped[float] = mapped_column(Float)
    kl_max: Mapped[float] = mapped_column(Float)
    js_mean: Mapped[float] = mapped_column(Float)
    top1_agreement: Mapped[float] = mapped_column(Float)
    ref_logprob_base: Mapped[float] = mapped_column(Float)
    ref_logprob_adapted: Mapped[float] = mapped_column(Float)
    ref_logprob_delta: Mapped[float] = mapped_column(Float)
    output: Mapped[str] = mapped_column(Text)
    new_tokens: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    tokens_per_s: Mapped[float] = mapped_column(Float)
    embedding_cosine_distance: Mapped[float] = mapped_column(Float)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    toxicity: Mapped[float | None] = mapped_column(Float)
    pii_leaks: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)

    __table_args__ = (
        UniqueConstraint("run_id", "prompt_id", "adapter_version_id"),
        Index("ix_canary_results_version", "adapter_version_id", "run_id"),
    )


class CanaryBaseline(Base):
    """The run each adapter version's later runs on a dataset are compared with."""

    __tablename__ = "canary_baselines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("canary_datasets.id"))
    run_id: Mapped[int] = mapped_column(ForeignKey("canary_runs.id"))
    pinned: Mapped[bool] = mapped_column(default=False)
    set_at: Mapped[datetime] = mapped_column(default=utcnow)
    set_by: Mapped[str] = mapped_column(String(200))

    __table_args__ = (UniqueConstraint("adapter_version_id", "dataset_id"),)


class RiskAnnotation(Base):
    """A reviewer's verdict on one before/after sample of a run."""

    __tablename__ = "risk_annotations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("canary_runs.id", ondelete="CASCADE"))
    prompt_id: Mapped[str] = mapped_column(String(200))
    adapter_version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id"))
    verdict: Mapped[str] = mapped_column(String(30))
    note: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(200))
    ts: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_risk_annotations_sample", "run_id", "prompt_id", "adapter_version_id"),)


class GateVerdict(Base):
    """The promotion gate's verdict on a candidate version, recorded in the registry."""

    __tablename__ = "gate_verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id"))
    run_id: Mapped[int] = mapped_column(ForeignKey("canary_runs.id"))
    passed: Mapped[bool]
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    compared_with: Mapped[str | None] = mapped_column(String(200))
    actor: Mapped[str] = mapped_column(String(200))
    ts: Mapped[datetime] = mapped_column(default=utcnow)


class MonitorResult(Base):
    """One monitor's value for one adapter version (and optionally a segment or tenant)."""

    __tablename__ = "monitor_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[datetime] = mapped_column(default=utcnow)
    monitor: Mapped[str] = mapped_column(String(100))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("canary_runs.id", ondelete="CASCADE"))
    adapter_version_id: Mapped[int | None] = mapped_column(ForeignKey("adapter_versions.id"))
    adapter: Mapped[str | None] = mapped_column(String(200))
    version: Mapped[str | None] = mapped_column(String(128))
    base_model: Mapped[str | None] = mapped_column(String(200))
    segment: Mapped[str | None] = mapped_column(String(200))
    tenant: Mapped[str | None] = mapped_column(String(200))
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    breached: Mapped[bool] = mapped_column(default=False)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_monitor_results_lookup", "monitor", "adapter", "ts"),
        Index("ix_monitor_results_run", "run_id"),
    )
