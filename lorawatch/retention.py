"""How long LoraWatch keeps each kind of data (``[retention]``), applied by the daily lifecycle
job and by ``lorawatch purge`` (``--dry-run`` counts without changing anything).

What is purged: canary output texts (the scores, embeddings and monitor results stay, so
trends and baselines keep working), minute and hour traffic buckets, KPI observations,
delivered or failed notifications with their attempts, resolved alerts that no incident
links to, finished job runs, and the audit log (kept longest). Open alerts, pending
notifications, running jobs and everything an incident links to are never purged. One purge
is one transaction and records one audit entry with its counts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from lorawatch import audit
from lorawatch.db import Database
from lorawatch.db.models import (
    Alert,
    AuditLog,
    CanaryBaseOutput,
    CanaryResult,
    CanaryRun,
    IncidentAlert,
    JobRun,
    KpiValue,
    Notification,
    TrafficHour,
    TrafficMinute,
)
from lorawatch.db.types import utcnow
from lorawatch.settings import Settings

ERASED = "<erased: past [retention] canary_outputs>"


def purge(
    db: Database, settings: Settings, *, now: datetime | None = None, dry_run: bool = False, actor: str
) -> dict[str, Any]:
    """Apply (or with ``dry_run`` only count) the retention settings; returns counts per kind."""
    now = now or utcnow()
    keep = settings.retention
    counts: dict[str, int] = {}
    with db.session() as session:
        counts["canary_outputs"] = _erase_outputs(session, now - keep.canary_outputs, dry_run)
        for kind, model, column, extra in (
            ("traffic_minutes", TrafficMinute, TrafficMinute.minute, None),
            ("traffic_hours", TrafficHour, TrafficHour.minute, None),
            ("kpis", KpiValue, KpiValue.ts, None),
            ("notifications", Notification, Notification.created_at, Notification.status.in_(("sent", "failed"))),
            ("job_runs", JobRun, JobRun.started_at, JobRun.status != "running"),
            ("audit", AuditLog, AuditLog.ts, None),
        ):
            cutoff = now - getattr(keep, kind)
            condition = column < cutoff if extra is None else (column < cutoff) & extra
            counts[kind] = _apply(session, model, condition, dry_run)
        linked = select(IncidentAlert.alert_id)
        old_alert = (
            Alert.state.in_(("resolved", "inactive"))
            & (func.coalesce(Alert.resolved_at, Alert.last_eval_at) < now - keep.resolved_alerts)
            & Alert.id.not_in(linked)
        )
        counts["resolved_alerts"] = _apply(session, Alert, old_alert, dry_run)
        if not dry_run and any(counts.values()):
            audit.record(
                session, actor=actor, action="retention.purge", object_type="retention", object_id="all", details=counts
            )
    return {"dry_run": dry_run, "at": now, "purged" if not dry_run else "would_purge": counts}


def _apply(session: Session, model: Any, condition: Any, dry_run: bool) -> int:
    count = session.scalar(select(func.count()).select_from(model).where(condition)) or 0
    if count and not dry_run:
        session.execute(delete(model).where(condition).execution_options(synchronize_session=False))
    return count


def _erase_outputs(session: Session, cutoff: datetime, dry_run: bool) -> int:
    """Erase the text of canary outputs (and of their PII findings) of runs started before ``cutoff``."""
    old_runs = select(CanaryRun.id).where(CanaryRun.started_at < cutoff)
    count = 0
    for model in (CanaryResult, CanaryBaseOutput):
        rows = session.scalars(select(model).where(model.run_id.in_(old_runs), model.output != ERASED))
        for row in rows:
            count += 1
            if dry_run:
                continue
            row.output = ERASED
            if row.pii_leaks:
                row.pii_leaks = [
                    {k: v for k, v in leak.items() if k != "text"} | {"text": f"<{leak.get('type', 'PII')}>"}
                    for leak in row.pii_leaks
                ]
    return count
