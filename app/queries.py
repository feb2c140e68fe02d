"""Aggregated reads for charts and tables, shared by the dashboard and the post-incident
reports: tidy pandas frames (``ts``, ``series``, ``value``) per adapter and time window."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from lorawatch.db.models import AdapterRecord, AdapterVersion, AliasEvent, KpiValue, MonitorResult, TrafficHour


def monitor_frame(session: Session, adapter: str, monitors: list[str], start: datetime, end: datetime) -> pd.DataFrame:
    """Overall (not per segment) results of the given monitors for an adapter, one row per result."""
    rows = session.execute(
        select(MonitorResult.ts, MonitorResult.monitor, MonitorResult.value, MonitorResult.version)
        .where(MonitorResult.adapter == adapter, MonitorResult.monitor.in_(monitors), MonitorResult.segment.is_(None),
               MonitorResult.tenant.is_(None), MonitorResult.ts >= start, MonitorResult.ts <= end)
        .order_by(MonitorResult.ts)).all()
    return pd.DataFrame([{"ts": r.ts, "series": r.monitor, "value": r.value, "version": r.version} for r in rows],
                        columns=["ts", "series", "value", "version"])


def thresholds(session: Session, adapter: str, monitors: list[str]) -> dict[str, float]:
    """The latest threshold in force for each monitor."""
    out = {}
    for monitor in monitors:
        value = session.scalar(select(MonitorResult.threshold).where(MonitorResult.adapter == adapter, MonitorResult.monitor == monitor,
                                                                     MonitorResult.threshold.is_not(None))
                               .order_by(MonitorResult.ts.desc()).limit(1))
        if value is not None:
            out[monitor] = value
    return out


def alias_events_frame(session: Session, adapter: str, start: datetime, end: datetime) -> pd.DataFrame:
    """Promotions and rollbacks of an adapter's aliases, as chart markers."""
    rows = session.execute(
        select(AliasEvent.ts, AliasEvent.action, AliasEvent.alias, AdapterVersion.version)
        .join(AdapterRecord, AdapterRecord.id == AliasEvent.adapter_id)
        .join(AdapterVersion, AdapterVersion.id == AliasEvent.to_version_id)
        .where(AdapterRecord.name == adapter, AliasEvent.ts >= start, AliasEvent.ts <= end).order_by(AliasEvent.ts)).all()
    return pd.DataFrame([{"ts": r.ts, "label": f"{r.action} {r.alias} -> {r.version}"} for r in rows], columns=["ts", "label"])


def latency_frame(session: Session, adapter: str, start: datetime, end: datetime) -> pd.DataFrame:
    """P50, P95 and P99 per hour, merged over versions and tenants from the hourly sketches."""
    from monitors.sketch import merge_many

    rows = session.execute(select(TrafficHour.minute, TrafficHour.latency_sketch).where(
        TrafficHour.adapter == adapter, TrafficHour.minute >= start, TrafficHour.minute <= end)).all()
    by_hour: dict[datetime, list[bytes]] = {}
    for hour, blob in rows:
        by_hour.setdefault(hour, []).append(blob)
    out = []
    for hour in sorted(by_hour):
        sketch = merge_many(by_hour[hour])
        for q, name in ((0.5, "P50"), (0.95, "P95"), (0.99, "P99")):
            out.append({"ts": hour, "series": name, "value": sketch.quantile(q)})
    return pd.DataFrame(out, columns=["ts", "series", "value"])


def kpi_frame(session: Session, adapter: str, start: datetime, end: datetime) -> pd.DataFrame:
    """The daily mean of each KPI of an adapter."""
    rows = session.execute(select(KpiValue.ts, KpiValue.kpi, KpiValue.value).where(
        KpiValue.adapter == adapter, KpiValue.ts >= start, KpiValue.ts <= end)).all()
    if not rows:
        return pd.DataFrame(columns=["ts", "series", "value"])
    frame = pd.DataFrame(rows, columns=["ts", "series", "value"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.floor("D")
    return frame.groupby(["ts", "series"], as_index=False)["value"].mean()
