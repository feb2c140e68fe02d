"""Traffic tables: ingested files, per-minute request aggregates with latency sketches, KPIs."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lorawatch.db.models.base import Base
from lorawatch.db.types import utcnow


class IngestedFile(Base):
    """A file of requests or KPIs, by content hash: ingesting it again counts nothing twice."""

    __tablename__ = "ingested_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    rows: Mapped[int] = mapped_column(Integer)
    ingested_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))

    __table_args__ = (UniqueConstraint("kind", "sha256"),)


class _TrafficBucket:
    """Requests of one (adapter, version, tenant) in one time bucket: counters and DDSketches."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    minute: Mapped[datetime]
    adapter: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(128), default="")
    tenant: Mapped[str] = mapped_column(String(200), default="")
    base_model: Mapped[str] = mapped_column(String(200), default="")
    requests: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    gpu_seconds: Mapped[float] = mapped_column(Float)
    latency_sketch: Mapped[bytes] = mapped_column(LargeBinary)
    ttft_sketch: Mapped[bytes | None] = mapped_column(LargeBinary)


class TrafficMinute(_TrafficBucket, Base):
    """Requests per (adapter, version, tenant, minute): answers windows shorter than 6 hours."""

    __tablename__ = "traffic_minutes"
    __table_args__ = (
        UniqueConstraint("adapter", "version", "tenant", "minute"),
        Index("ix_traffic_minutes_minute", "minute"),
    )


class TrafficHour(_TrafficBucket, Base):
    """The same per hour (``minute`` holds the hour's start): answers windows of 6 hours or more."""

    __tablename__ = "traffic_hours"
    __table_args__ = (
        UniqueConstraint("adapter", "version", "tenant", "minute"),
        Index("ix_traffic_hours_minute", "minute"),
    )


class KpiValue(Base):
    """One business KPI observation for an adapter (conversion, RPM, CSAT, ...)."""

    __tablename__ = "kpi_values"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[datetime]
    adapter: Mapped[str] = mapped_column(String(200))
    tenant: Mapped[str] = mapped_column(String(200), default="")
    kpi: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)
    file_id: Mapped[int | None] = mapped_column(ForeignKey("ingested_files.id"))

    __table_args__ = (Index("ix_kpi_values_lookup", "adapter", "kpi", "ts"),)


# Windows this long or longer are answered from hourly buckets (see ``bucket_table``).
HOURLY_FROM = timedelta(hours=6)


def bucket_table(start: datetime, end: datetime) -> tuple[type[TrafficHour] | type[TrafficMinute], datetime]:
    """The table a window is answered from, and the window's start in it.

    Windows of 6 hours or more merge hourly sketches (their start rounded down to the hour);
    shorter ones merge minute sketches. Here, not in ``lorawatch.monitors.traffic``, so that
    evaluating monitors does not import pandas, which only ingestion needs.
    """
    if end - start >= HOURLY_FROM:
        return TrafficHour, start.replace(minute=0, second=0, microsecond=0)
    return TrafficMinute, start
