"""Scheduled jobs as records: when each configured job fires, its runs, and the listings the
CLI and the dashboard show. The scheduler (``lorawatch.scheduler``) claims and runs them.

Every host computes the same occurrences: interval schedules are aligned to the epoch, crontab
lines are read in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import select

from lorawatch.cron import crontab_trigger
from lorawatch.db import Database
from lorawatch.db.models import JobRun
from lorawatch.db.types import utcnow
from lorawatch.durations import format_duration
from lorawatch.settings import JobSettings, Settings

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CRON_WINDOWS = [
    timedelta(minutes=2),
    timedelta(hours=2),
    timedelta(days=2),
    timedelta(days=9),
    timedelta(days=33),
    timedelta(days=370),
]


def _cron(expr: str) -> CronTrigger:
    return crontab_trigger(expr)


def occurrence(job: JobSettings, now: datetime) -> datetime | None:
    """The job's latest fire time at or before ``now`` (None when it never fired yet)."""
    if job.every is not None:
        step = job.every.total_seconds()
        seconds = (now - EPOCH).total_seconds()
        return EPOCH + timedelta(seconds=(seconds // step) * step)
    assert job.cron is not None  # JobSettings holds exactly one of cron and every
    trigger = _cron(job.cron)
    for window in _CRON_WINDOWS:
        fire = trigger.get_next_fire_time(None, now - window)
        if fire is None or fire > now:
            continue
        latest = fire
        while True:
            nxt = trigger.get_next_fire_time(latest, latest + timedelta(seconds=1))
            if nxt is None or nxt > now:
                return latest.astimezone(UTC)
            latest = nxt
    return None


def next_fire(job: JobSettings, now: datetime) -> datetime | None:
    """The job's next fire time after ``now``."""
    if job.every is not None:
        latest = occurrence(job, now)
        assert latest is not None  # an interval schedule has an occurrence at any time
        return latest + job.every
    assert job.cron is not None  # JobSettings holds exactly one of cron and every
    fire = _cron(job.cron).get_next_fire_time(None, now + timedelta(microseconds=1))
    return fire.astimezone(UTC) if fire else None


def run_dict(run: JobRun) -> dict[str, Any]:
    """One job run as a plain dict."""
    return {
        "id": run.id,
        "job": run.job,
        "kind": run.kind,
        "scheduled_for": run.scheduled_for,
        "attempt": run.attempt,
        "trigger": run.trigger,
        "status": run.status,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "duration_s": run.duration_s,
        "error": run.error,
        "result": run.result,
        "host": run.host,
        "pid": run.pid,
    }


def list_jobs(db: Database, settings: Settings, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Each configured job: schedule, next fire time, and its last run."""
    now = now or utcnow()
    out = []
    with db.session() as session:
        for name, job in settings.scheduler.all_jobs.items():
            last = session.scalar(
                select(JobRun).where(JobRun.job == name).order_by(JobRun.started_at.desc(), JobRun.id.desc())
            )
            out.append(
                {
                    "job": name,
                    "kind": job.kind,
                    "schedule": f"every {format_duration(job.every)}" if job.every is not None else f"cron {job.cron}",
                    "next_run": next_fire(job, now),
                    "last_status": last.status if last else None,
                    "last_started": last.started_at if last else None,
                    "last_duration_s": last.duration_s if last else None,
                    "last_error": last.error if last else None,
                }
                | (
                    {
                        "dataset": job.dataset,
                        "adapters": job.adapters or "production",
                        "device": job.device or "default",
                    }
                    if job.kind == "canary"
                    else {}
                )
            )
    return out


def history(db: Database, *, job: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest job runs (start, end, status, error, duration)."""
    with db.session() as session:
        query = select(JobRun).order_by(JobRun.started_at.desc(), JobRun.id.desc()).limit(limit)
        if job:
            query = query.where(JobRun.job == job)
        return [run_dict(r) for r in session.scalars(query)]
