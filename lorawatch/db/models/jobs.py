"""Scheduler tables: the run history of scheduled jobs and the lease that lets one host run a job."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lorawatch.db.models.base import Base


class JobRun(Base):
    """One attempt at one occurrence of a scheduled job.

    An occurrence is the job's fire time (``scheduled_for``); the unique key on (job,
    scheduled_for, attempt) is what makes two schedulers run each occurrence once. A run whose
    heartbeat stops (its process died) is marked failed by the next scheduler, which runs the
    occurrence again as the next attempt.
    """

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(30))
    scheduled_for: Mapped[datetime]
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    trigger: Mapped[str] = mapped_column(String(20), default="schedule")
    status: Mapped[str] = mapped_column(String(20), default="running")
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    duration_s: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    # a command job's child runs in its own process group; a restarted scheduler on the same
    # host stops that group before it runs the occurrence again
    child_pgid: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        UniqueConstraint("job", "scheduled_for", "attempt"),
        Index("ix_job_runs_job_started", "job", "started_at"),
    )


class JobLease(Base):
    """Who may run a job now: held by one run at a time, renewed by its heartbeat, taken over
    when it expires."""

    __tablename__ = "job_leases"

    job: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(300))
    run_id: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[datetime]
