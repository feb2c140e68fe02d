"""The series alert rules evaluate: the latest monitor result per label set, and the series
LoraWatch derives from its own tables (canary jobs, registry lifecycle).

A series is a set of labels (adapter, version, base_model, dataset, segment, tenant, kpi;
empty ones are left out) with a value, the threshold in force, whether the monitor counted it
as breached, and a context for annotation templates (run, version, details, ...).

``versions: served`` (the default) keeps only results of versions that an alias points to,
when the adapter has any alias; so a rollback stops the rolled-back version's alerts at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lorawatch.alerts.matchers import matches_all
from lorawatch.alerts.rules import Rule
from lorawatch.db.models import (
    AdapterAlias,
    AdapterRecord,
    AdapterVersion,
    BaseModelRecord,
    CanaryDatasetRecord,
    CanaryRun,
    JobRun,
    MonitorResult,
    Notification,
)
from lorawatch.settings import Settings


@dataclass
class Sample:
    """One series' value at an evaluation time."""

    labels: dict[str, str]
    value: float | None
    threshold: float | None
    breached: bool
    context: dict[str, Any] = field(default_factory=dict)


def _clean(labels: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in labels.items() if v not in (None, "")}


class SeriesReader:
    """Reads the series of rules at one evaluation time, sharing lookups between rules."""

    def __init__(self, session: Session, settings: Settings, now: datetime) -> None:
        self.session, self.settings, self.now = session, settings, now
        self._served: tuple[set[int], set[str]] | None = None
        self._datasets: dict[int, str] = {}

    def served(self) -> tuple[set[int], set[str]]:
        """Version ids an alias points to, and the names of adapters that have any alias."""
        if self._served is None:
            rows = self.session.execute(
                select(AdapterAlias.version_id, AdapterRecord.name).join(
                    AdapterRecord, AdapterRecord.id == AdapterAlias.adapter_id
                )
            ).all()
            self._served = ({r[0] for r in rows}, {r[1] for r in rows})
        return self._served

    def dataset_of_run(self, run_id: int | None) -> str | None:
        if run_id is None:
            return None
        if run_id not in self._datasets:
            row = self.session.execute(
                select(CanaryDatasetRecord.name)
                .join(CanaryRun, CanaryRun.dataset_id == CanaryDatasetRecord.id)
                .where(CanaryRun.id == run_id)
            ).first()
            self._datasets[run_id] = row[0] if row else None
        return self._datasets[run_id]

    def samples(self, rule: Rule) -> list[Sample]:
        """The rule's series (after its selector) at ``now``."""
        if rule.monitor:
            found = self._monitor(rule)
        else:
            found = getattr(self, f"_metric_{rule.metric}")(rule)
        return [s for s in found if matches_all(rule.selector, s.labels)]

    def _monitor(self, rule: Rule) -> list[Sample]:
        rows = self.session.scalars(
            select(MonitorResult)
            .where(
                MonitorResult.monitor == rule.monitor,
                MonitorResult.ts <= self.now,
                MonitorResult.ts > self.now - rule.lookback,
            )
            .order_by(MonitorResult.ts, MonitorResult.id)
        ).all()
        served_versions, served_adapters = self.served()
        latest: dict[tuple, Sample] = {}
        for row in rows:
            if (
                rule.versions == "served"
                and row.adapter in served_adapters
                and row.adapter_version_id is not None
                and row.adapter_version_id not in served_versions
            ):
                continue
            details = row.details or {}
            labels = _clean(
                {
                    "adapter": row.adapter,
                    "version": row.version,
                    "base_model": row.base_model,
                    "dataset": self.dataset_of_run(row.run_id),
                    "segment": row.segment,
                    "tenant": row.tenant,
                    "kpi": details.get("kpi"),
                }
            )
            key = tuple(sorted(labels.items()))
            latest[key] = Sample(
                labels,
                row.value,
                row.threshold,
                row.breached,
                {"run": row.run_id, "version": row.version, "details": details, "measured_at": row.ts.isoformat()},
            )
        return list(latest.values())

    def _metric_canary_job_failed(self, rule: Rule) -> list[Sample]:
        stale = self.settings.alerts.stale_run_after
        runs = self.session.execute(
            select(CanaryRun, CanaryDatasetRecord.name)
            .join(CanaryDatasetRecord, CanaryDatasetRecord.id == CanaryRun.dataset_id)
            .where(CanaryRun.started_at <= self.now, CanaryRun.started_at > self.now - rule.lookback)
            .order_by(CanaryRun.started_at, CanaryRun.id)
        ).all()
        latest: dict[tuple[str, str], Sample] = {}
        for run, dataset in runs:
            failed = run.status == "failed" or (run.status == "running" and run.heartbeat_at < self.now - stale)
            for a in run.adapters:
                labels = _clean({"adapter": a["adapter"], "dataset": dataset})
                latest[(a["adapter"], dataset)] = Sample(
                    labels,
                    1.0 if failed else 0.0,
                    None,
                    failed,
                    {
                        "run": run.id,
                        "version": a["version"],
                        "status": run.status,
                        "error": run.error,
                        "heartbeat_at": run.heartbeat_at.isoformat(),
                    },
                )
        return list(latest.values()) + self._failed_canary_jobs(rule)

    def _failed_canary_jobs(self, rule: Rule) -> list[Sample]:
        """Scheduled canary jobs whose latest run failed before a canary run could start (bad dataset, ...)."""

        jobs = {name: job for name, job in self.settings.scheduler.all_jobs.items() if job.kind == "canary"}
        out = []
        for name, job in jobs.items():
            last = self.session.scalar(
                select(JobRun)
                .where(JobRun.job == name, JobRun.started_at <= self.now, JobRun.status != "running")
                .order_by(JobRun.started_at.desc(), JobRun.id.desc())
            )
            if last is None or last.started_at <= self.now - rule.lookback:
                continue
            failed = last.status == "failed" and not (last.result or {}).get("run")
            out.append(
                Sample(
                    _clean({"job": name, "dataset": Path(job.dataset).stem}),
                    1.0 if failed else 0.0,
                    None,
                    failed,
                    {"run": None, "job_run": last.id, "error": last.error, "status": last.status},
                )
            )
        return out

    def _metric_canary_job_age_hours(self, rule: Rule) -> list[Sample]:
        last_complete: dict[str, datetime] = {}
        for run in self.session.scalars(
            select(CanaryRun).where(CanaryRun.status == "complete", CanaryRun.finished_at <= self.now)
        ):
            for a in run.adapters:
                if a["adapter"] not in last_complete or run.finished_at > last_complete[a["adapter"]]:
                    last_complete[a["adapter"]] = run.finished_at
        served = self.session.execute(
            select(AdapterRecord.name, BaseModelRecord.name, func.min(AdapterAlias.updated_at))
            .join(AdapterAlias, AdapterAlias.adapter_id == AdapterRecord.id)
            .join(BaseModelRecord, BaseModelRecord.id == AdapterRecord.base_model_id)
            .group_by(AdapterRecord.name, BaseModelRecord.name)
        ).all()
        out = []
        for adapter, base, first_alias in served:
            since = last_complete.get(adapter)
            hours = max((self.now - (since or first_alias)).total_seconds() / 3600, 0.0)
            out.append(
                Sample(
                    _clean({"adapter": adapter, "base_model": base}),
                    hours,
                    None,
                    False,
                    {"last_run": since.isoformat() if since else None},
                )
            )
        return out

    def _metric_notifications_failed(self, rule: Rule) -> list[Sample]:
        """Per receiver, the notifications that failed for good within the lookback and were not
        sent again (``notify retry`` makes one pending, which takes it out of the count)."""
        rows = self.session.execute(
            select(Notification.receiver, func.count(), func.max(Notification.id))
            .where(
                Notification.status == "failed",
                Notification.failed_at <= self.now,
                Notification.failed_at > self.now - rule.lookback,
            )
            .group_by(Notification.receiver)
        ).all()
        out = []
        for receiver, count, last_id in rows:
            last = self.session.get(Notification, last_id)
            out.append(
                Sample(
                    {"receiver": receiver},
                    float(count),
                    None,
                    count > 0,
                    {"last_id": last_id, "last_error": last.last_error if last else None},
                )
            )
        return out

    def _served_versions(self) -> list[AdapterVersion]:
        served_versions, _ = self.served()
        if not served_versions:
            return []
        return list(self.session.scalars(select(AdapterVersion).where(AdapterVersion.id.in_(served_versions))))

    def _metric_adapter_data_expires_in_days(self, rule: Rule) -> list[Sample]:
        out = []
        for v in self._served_versions():
            if v.data_expires_on is None:
                continue
            days = (v.data_expires_on - self.now.date()).days
            out.append(
                Sample(
                    _clean({"adapter": v.adapter.name, "version": v.version, "team": v.owner_team}),
                    float(days),
                    None,
                    False,
                    {"version": v.version, "expires_on": v.data_expires_on.isoformat()},
                )
            )
        return out

    def _metric_adapter_review_overdue_days(self, rule: Rule) -> list[Sample]:
        out = []
        default = self.settings.registry.review_due_days
        for v in self._served_versions():
            cadence = v.review_cadence_days or default
            reference = v.last_reviewed_at or v.created_at
            overdue = (self.now - (reference + timedelta(days=cadence))).total_seconds() / 86400
            out.append(
                Sample(
                    _clean({"adapter": v.adapter.name, "version": v.version, "team": v.owner_team}),
                    overdue,
                    None,
                    False,
                    {
                        "version": v.version,
                        "cadence_days": cadence,
                        "last_reviewed": v.last_reviewed_at.date().isoformat() if v.last_reviewed_at else None,
                        "created": v.created_at.date().isoformat(),
                    },
                )
            )
        return out
