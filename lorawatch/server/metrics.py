"""``/metrics``: LoraWatch's own state in Prometheus' text format, read from the database at
each scrape.

Names and labels are stable (docs/server.md lists them). Cardinality is bounded by what is
deployed, not by traffic or history:

- ``lorawatch_monitor_value``, ``_threshold``, ``_breached`` {adapter, version, monitor}: the
  latest overall result (no segment) of each canary monitor for each version an alias points
  at now (production, staging, ...; any tenant; versions nothing points at any more drop out),
  and of each traffic monitor (latency, SLO burn rates, KPIs: no version label) per adapter.
- ``lorawatch_alerts`` {alertname, severity, adapter, state}: 1 per open alert (pending or
  firing), in the shape of Prometheus' own ``ALERTS``; ``acked`` is a label, not a state.
- ``lorawatch_canary_last_run_timestamp_seconds`` and ``_age_seconds`` {adapter}: the end of
  the newest complete canary run that covered the adapter.
- ``lorawatch_outbox_notifications`` {receiver, status}: pending and failed notifications.
- ``lorawatch_job_last_success_timestamp_seconds`` / ``_last_failure_`` {job}.
- ``lorawatch_incidents_open`` {severity}; ``lorawatch_up``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from sqlalchemy import func, select

from lorawatch.db import Database
from lorawatch.db.models import (
    AdapterAlias,
    AdapterRecord,
    AdapterVersion,
    Alert,
    CanaryRun,
    Incident,
    JobRun,
    MonitorResult,
    Notification,
)
from lorawatch.db.types import utcnow

log = logging.getLogger(__name__)

OPEN_ALERT_STATES = ("pending", "firing")
OPEN_INCIDENT_STATES = ("triggered", "acknowledged", "mitigated")


def _seconds(moment: datetime) -> float:
    """A UTC datetime as Unix seconds (the database's are timezone-aware, lorawatch.db.types)."""
    return moment.timestamp()


class StateCollector:
    """A prometheus_client collector over the database (one query per family)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        families: list[Metric] = []
        try:
            with self.database.session() as session:
                families += self._monitors(session)
                families.append(self._alerts(session))
                families += self._canary_age(session, now)
                families.append(self._outbox(session))
                families += self._jobs(session)
                families.append(self._incidents(session))
            read = 1
        except Exception as exc:  # the scrape still answers: lorawatch_up 0 is what to alert on
            log.warning("/metrics could not read the database: %s", type(exc).__name__)
            families, read = [], 0
        up = GaugeMetricFamily("lorawatch_up", "1 when the server read the database for this scrape, else 0.")
        up.add_metric([], read)
        yield from families
        yield up

    def _monitors(self, session) -> Iterator[Metric]:
        labels = ["adapter", "version", "monitor"]
        value = GaugeMetricFamily("lorawatch_monitor_value", "Latest overall value of a monitor.", labels=labels)
        threshold = GaugeMetricFamily(
            "lorawatch_monitor_threshold", "Threshold the latest value was judged against.", labels=labels
        )
        breached = GaugeMetricFamily(
            "lorawatch_monitor_breached", "1 when the latest value breached its threshold.", labels=labels
        )
        aliased = select(AdapterAlias.version_id).distinct().scalar_subquery()
        latest = (
            select(MonitorResult.adapter_version_id, MonitorResult.monitor, func.max(MonitorResult.id).label("id"))
            .where(MonitorResult.segment.is_(None), MonitorResult.adapter_version_id.in_(aliased))
            .group_by(MonitorResult.adapter_version_id, MonitorResult.monitor)
            .subquery()
        )
        rows = session.execute(
            select(AdapterRecord.name, AdapterVersion.version, MonitorResult)
            .join(latest, MonitorResult.id == latest.c.id)
            .join(AdapterVersion, AdapterVersion.id == MonitorResult.adapter_version_id)
            .join(AdapterRecord, AdapterRecord.id == AdapterVersion.adapter_id)
            .order_by(AdapterRecord.name, AdapterVersion.version, MonitorResult.monitor)
        )
        # traffic monitors (latency, SLO burn, KPIs) judge an adapter's traffic, whatever the version
        latest_traffic = (
            select(MonitorResult.adapter, MonitorResult.monitor, func.max(MonitorResult.id).label("id"))
            .where(
                MonitorResult.adapter_version_id.is_(None),
                MonitorResult.segment.is_(None),
                MonitorResult.tenant.is_(None),
                MonitorResult.adapter.in_(select(AdapterRecord.name).scalar_subquery()),
            )
            .group_by(MonitorResult.adapter, MonitorResult.monitor)
            .subquery()
        )
        traffic = session.execute(
            select(MonitorResult.adapter, MonitorResult)
            .join(latest_traffic, MonitorResult.id == latest_traffic.c.id)
            .order_by(MonitorResult.adapter, MonitorResult.monitor)
        )
        for adapter, version, result in [*rows, *((adapter, "", result) for adapter, result in traffic)]:
            key = [adapter, version, result.monitor]
            if result.value is not None:
                value.add_metric(key, result.value)
            if result.threshold is not None:
                threshold.add_metric(key, result.threshold)
            breached.add_metric(key, 1.0 if result.breached else 0.0)
        yield from (value, threshold, breached)

    def _alerts(self, session) -> Metric:
        family = GaugeMetricFamily(
            "lorawatch_alerts",
            "Open LoraWatch alerts, 1 each (Prometheus' ALERTS shape).",
            labels=["alertname", "severity", "adapter", "state", "acked"],
        )
        counts: dict[tuple[str, ...], int] = {}
        for alert in session.scalars(select(Alert).where(Alert.state.in_(OPEN_ALERT_STATES))):
            labels = alert.labels or {}
            key: tuple[str, ...] = (
                str(labels.get("alertname") or alert.rule_id),
                alert.severity,
                str(labels.get("adapter", "")),
                alert.state,
                "true" if alert.acked_at else "false",
            )
            counts[key] = counts.get(key, 0) + 1
        for key, count in sorted(counts.items()):
            family.add_metric(list(key), count)
        return family

    def _canary_age(self, session, now: datetime) -> Iterator[Metric]:
        stamp = GaugeMetricFamily(
            "lorawatch_canary_last_run_timestamp_seconds",
            "End of the newest complete canary run covering the adapter.",
            labels=["adapter"],
        )
        age = GaugeMetricFamily(
            "lorawatch_canary_last_run_age_seconds",
            "Seconds since the newest complete canary run covering the adapter ended.",
            labels=["adapter"],
        )
        last: dict[str, datetime] = {}
        runs = session.execute(
            select(CanaryRun.adapters, CanaryRun.finished_at).where(
                CanaryRun.status == "complete", CanaryRun.finished_at.is_not(None)
            )
        )
        for adapters, finished in runs:
            for entry in adapters or []:
                name = entry.get("adapter")
                if name and (name not in last or finished > last[name]):
                    last[name] = finished
        for name in sorted(last):
            stamp.add_metric([name], _seconds(last[name]))
            age.add_metric([name], max(0.0, (now - last[name]).total_seconds()))
        yield from (stamp, age)

    def _outbox(self, session) -> Metric:
        family = GaugeMetricFamily(
            "lorawatch_outbox_notifications",
            "Notifications waiting (pending) or given up on (failed), per receiver.",
            labels=["receiver", "status"],
        )
        rows = session.execute(
            select(Notification.receiver, Notification.status, func.count())
            .where(Notification.status.in_(("pending", "failed")))
            .group_by(Notification.receiver, Notification.status)
        )
        seen = {(receiver, status): count for receiver, status, count in rows}
        for receiver in sorted({r for r, _ in seen}):
            for status in ("pending", "failed"):
                family.add_metric([receiver, status], seen.get((receiver, status), 0))
        return family

    def _jobs(self, session) -> Iterator[Metric]:
        success = GaugeMetricFamily(
            "lorawatch_job_last_success_timestamp_seconds", "When the job last ended well.", labels=["job"]
        )
        failure = GaugeMetricFamily(
            "lorawatch_job_last_failure_timestamp_seconds", "When the job last failed.", labels=["job"]
        )
        rows = session.execute(
            select(JobRun.job, JobRun.status, func.max(JobRun.ended_at))
            .where(JobRun.ended_at.is_not(None), JobRun.status.in_(("success", "failed")))
            .group_by(JobRun.job, JobRun.status)
            .order_by(JobRun.job)
        )
        for job, status, ended in rows:
            (success if status == "success" else failure).add_metric([job], _seconds(ended))
        yield from (success, failure)

    def _incidents(self, session) -> Metric:
        family = GaugeMetricFamily("lorawatch_incidents_open", "Incidents not yet resolved.", labels=["severity"])
        rows = session.execute(
            select(Incident.severity, func.count())
            .where(Incident.state.in_(OPEN_INCIDENT_STATES))
            .group_by(Incident.severity)
            .order_by(Incident.severity)
        )
        for severity, count in rows:
            family.add_metric([severity], count)
        return family


def render(database: Database) -> bytes:
    """The text exposition of the state, as one scrape reads it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(database))
    return generate_latest(registry)
