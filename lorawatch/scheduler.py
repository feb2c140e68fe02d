"""Scheduled jobs: the weekly canary, alert evaluation, outbox flushes, Prometheus pulls,
registry lifecycle, and your own commands.

Each job has a schedule (a crontab line or an interval, both in UTC). Its *occurrence* at a
time is the latest fire time not after it; an interval's fire times are aligned to the epoch,
so every host computes the same occurrences. Running an occurrence means claiming it in the
database first:

- the unique key (job, scheduled_for, attempt) of ``job_runs`` lets exactly one scheduler
  start an occurrence, however many run on however many hosts;
- a lease per job (``job_leases``), renewed by the run's heartbeat, keeps a job from running
  twice at once (a long canary and the next occurrence, say);
- a run whose heartbeat stops for ``stale_after`` died with its process: the next scheduler
  marks it failed and runs the occurrence again, as the next attempt;
- missed occurrences coalesce: after downtime only the latest one runs.

``lorawatch scheduler`` runs APScheduler 3.x (its SQLAlchemy job store in the same database)
to wake up at the fire times; ``lorawatch scheduler --once`` runs what is due and exits, for
cron and Kubernetes CronJobs. Both go through ``run_job``, so the guarantees are the same.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DBIntegrityError

from lorawatch import retention
from lorawatch.alerts.engine import evaluate
from lorawatch.alerts.outbox import flush
from lorawatch.cron import crontab_trigger
from lorawatch.db import Database
from lorawatch.db.models import JobLease, JobRun
from lorawatch.db.types import utcnow
from lorawatch.durations import format_duration
from lorawatch.errors import ConflictError, DependencyError, LoraWatchError, NotFoundError
from lorawatch.jobs import EPOCH, occurrence, run_dict
from lorawatch.monitors import canary
from lorawatch.monitors.dataset import load_dataset
from lorawatch.monitors.prometheus_pull import pull_latency
from lorawatch.monitors.traffic_eval import evaluate_traffic
from lorawatch.plugins import load_default_plugins
from lorawatch.registry import lifecycle
from lorawatch.registry.store import Store
from lorawatch.secrets import install_log_scrubber, scrub
from lorawatch.settings import Settings

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
PR_SET_PDEATHSIG = 1
# the run a job step belongs to (a command job records its child's process group on it)
_CURRENT_RUN: contextvars.ContextVar[int | None] = contextvars.ContextVar("lorawatch_job_run", default=None)


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


@dataclass
class Claim:
    run_id: int
    job: str
    scheduled_for: datetime
    attempt: int


def claim(
    db: Database, settings: Settings, name: str, scheduled_for: datetime, now: datetime, *, trigger: str = "schedule"
) -> Claim | None:
    """Claim one occurrence of a job; None when it ran, is running elsewhere, or the job is leased."""
    job = settings.scheduler.all_jobs[name]
    stale = settings.scheduler.stale_after
    holder = holder_id()
    try:
        with db.session() as session:
            runs = list(
                session.scalars(
                    select(JobRun)
                    .where(JobRun.job == name, JobRun.scheduled_for == scheduled_for)
                    .order_by(JobRun.attempt)
                    .with_for_update()
                )
            )
            attempt = 1
            if runs:
                last = runs[-1]
                if last.status != "running":
                    return None
                if last.heartbeat_at > now - stale:
                    return None
                _mark_stale(last, now)
                attempt = last.attempt + 1
            for other in session.scalars(
                select(JobRun).where(JobRun.job == name, JobRun.status == "running", JobRun.heartbeat_at <= now - stale)
            ):
                _mark_stale(other, now)
            lease = session.get(JobLease, name, with_for_update=True)
            if lease is not None and lease.expires_at > now:
                return None
            run = JobRun(
                job=name,
                kind=job.kind,
                scheduled_for=scheduled_for,
                attempt=attempt,
                trigger=trigger,
                status="running",
                started_at=now,
                heartbeat_at=now,
                host=socket.gethostname(),
                pid=os.getpid(),
            )
            session.add(run)
            session.flush()
            if lease is None:
                session.add(JobLease(job=name, holder=holder, run_id=run.id, expires_at=now + stale))
            else:
                lease.holder, lease.run_id, lease.expires_at = holder, run.id, now + stale
            return Claim(run.id, name, scheduled_for, attempt)
    except DBIntegrityError:
        return None  # another scheduler claimed it in the same instant


def _mark_stale(run: JobRun, now: datetime) -> None:
    if run.child_pgid and run.host == socket.gethostname():
        _stop_group(run.child_pgid)  # its scheduler died; its command may live on: stop it first
    run.status, run.ended_at = "failed", now
    run.error = f"stale: no heartbeat since {run.heartbeat_at.isoformat()} (the process running it died); run again"
    run.duration_s = (run.heartbeat_at - run.started_at).total_seconds()


class _Heartbeat(threading.Thread):
    """Renews a run's heartbeat and its job's lease until stopped."""

    def __init__(self, db: Database, settings: Settings, claim_: Claim, clock: Clock) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{claim_.job}")
        self.db, self.claim, self.clock = db, claim_, clock
        self.interval = settings.scheduler.heartbeat_s
        self.stale = settings.scheduler.stale_after
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                now = self.clock()
                with self.db.session() as session:
                    run = session.get(JobRun, self.claim.run_id)
                    run.heartbeat_at = now
                    lease = session.get(JobLease, self.claim.job)
                    if lease is not None and lease.run_id == self.claim.run_id:
                        lease.expires_at = now + self.stale
            except Exception:  # noqa: BLE001 - a missed beat is retried; the run goes on
                log.exception("heartbeat of job %s failed", self.claim.job)


def run_job(
    db: Database,
    settings: Settings,
    name: str,
    *,
    clock: Clock = utcnow,
    scheduled_for: datetime | None = None,
    trigger: str = "schedule",
) -> dict[str, Any] | None:
    """Claim and run one occurrence of a job (default: its latest); None when not ours to run."""
    jobs = settings.scheduler.all_jobs
    if name not in jobs:
        raise NotFoundError(f"job {name!r} is not configured", fix=f"use one of: {', '.join(sorted(jobs))}")
    now = clock()
    scheduled_for = scheduled_for or occurrence(jobs[name], now)
    if scheduled_for is None:
        return None
    got = claim(db, settings, name, scheduled_for, now, trigger=trigger)
    if got is None:
        return None
    heartbeat = _Heartbeat(db, settings, got, clock)
    heartbeat.start()
    started = time.monotonic()
    status, error, result = "success", None, None
    try:
        token = _CURRENT_RUN.set(got.run_id)
        try:
            result = JOB_KINDS[jobs[name].kind](db, settings, jobs[name], clock())
        finally:
            _CURRENT_RUN.reset(token)
    except LoraWatchError as exc:
        status, error = "failed", exc.one_line()
    except Exception as exc:  # noqa: BLE001 - any failure is recorded; the scheduler goes on
        log.exception("job %s failed", name)
        status, error = "failed", scrub(f"{type(exc).__name__}: {exc}")
    finally:
        heartbeat.stop.set()
        heartbeat.join()
    ended = clock()
    with db.session() as session:
        run = session.get(JobRun, got.run_id)
        run.status, run.error, run.ended_at = status, error, ended
        run.heartbeat_at = ended
        run.duration_s = round(time.monotonic() - started, 3)
        run.result = _jsonable(result)
        lease = session.get(JobLease, name)
        if lease is not None and lease.run_id == got.run_id:
            session.delete(lease)
        return run_dict(run)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str)) if value is not None else None


def run_due(
    db: Database, settings: Settings, *, clock: Clock = utcnow, only: list[str] | None = None
) -> list[dict[str, Any]]:
    """Run every job whose latest occurrence has not run yet (``scheduler --once``)."""
    done = []
    for name in settings.scheduler.all_jobs:
        if only and name not in only:
            continue
        result = run_job(db, settings, name, clock=clock)
        if result is not None:
            done.append(result)
    return done


def run_now(db: Database, settings: Settings, name: str, *, clock: Clock = utcnow) -> dict[str, Any]:
    """Run a job now, outside its schedule (``jobs run NAME``); refused while it runs elsewhere."""

    now = clock()
    result = run_job(db, settings, name, clock=clock, scheduled_for=now, trigger="manual")
    if result is None:
        raise ConflictError(
            f"job {name!r} is running elsewhere (its lease is held)", fix="wait for it, see `lorawatch jobs list`"
        )
    return result


# --- the jobs ---


def _resolve(path: str, settings: Settings) -> Path:
    candidate = Path(path).expanduser()
    if not candidate.is_absolute() and settings.source is not None and (settings.source.parent / candidate).exists():
        return settings.source.parent / candidate
    return candidate


def job_canary(db: Database, settings: Settings, job, now: datetime) -> dict[str, Any]:
    """One canary run over the job's adapters; without any named, one run per base model over every
    production version (none in production yet: nothing to do, and the job succeeds)."""

    options = canary.RunOptions.from_settings(settings, device=job.device)
    dataset = _resolve(job.dataset, settings)
    if job.adapters:
        groups = {None: list(job.adapters)}
    else:
        with db.session() as session:
            groups = canary.production_specs_by_base(session)
    if not groups:
        load_dataset(dataset)  # a bad dataset fails the job even while nothing is in production
    runs, failures = [], []
    for base, specs in groups.items():
        try:
            run_id = canary.create_run(
                db, settings, dataset_path=dataset, adapters=specs, options=options, actor="scheduler"
            )
            summary = canary.execute_run(db, settings, run_id, progress=False)
        except LoraWatchError as exc:
            if len(groups) == 1:
                raise
            failures.append(f"{base}: {exc.one_line()}")  # the other bases still run
            continue
        runs.append(
            {"run": run_id, "base": base, "status": summary.get("status"), "adapters": len(summary.get("adapters", []))}
        )
    if failures:
        raise LoraWatchError(
            f"{len(failures)} of {len(groups)} canary runs failed: {'; '.join(failures)}",
            fix="see lorawatch canary list and the errors above",
        )
    return {"runs": runs, "note": None if groups else "no adapter has a production version yet"}


def job_alerts(db: Database, settings: Settings, job, now: datetime) -> dict[str, Any]:
    load_default_plugins()
    evaluate_traffic(db, settings, now=now)  # the traffic monitors first, so their rules see fresh values
    result = evaluate(db, settings, now=now)
    return {k: result[k] for k in ("rules", "series", "firing", "pending", "notifications_queued")} | {
        "transitions": len(result["transitions"])
    }


def job_notify(db: Database, settings: Settings, job, now: datetime) -> dict[str, Any]:
    result = flush(db, settings, now=now)
    return {k: result[k] for k in ("queued", "delivered", "deferred", "pending")}


def job_prometheus(db: Database, settings: Settings, job, now: datetime) -> dict[str, Any]:
    rows = pull_latency(db, job.url)
    return {"series": len(rows)}


def job_lifecycle(db: Database, settings: Settings, job, now: datetime) -> dict[str, Any]:
    with db.session() as session:
        report = lifecycle.archive(
            session,
            Store.from_settings(settings),
            older_than_days=settings.registry.archive_after_days,
            actor="scheduler",
            now=now,
        )
    purged = retention.purge(db, settings, now=now, actor="scheduler")["purged"]
    return {"archived": [r["version"] for r in report if r["archived"]], "purged": purged}


def _die_with_parent() -> None:
    """In the child, before exec: be killed when the scheduler dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: a restarted scheduler stops the group
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


# The command waits at this gate (its stdin) until the scheduler has recorded its group. Popen
# returns only once the child has exec'd, so the wait is a shell's, on a pipe the scheduler holds:
# a scheduler that dies first closes it unopened, and the command never starts.
_GATE = 'read -r _ || exit 125; exec "$@" </dev/null'


def _stop_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # gone, or someone else's now
        os.killpg(pgid, signal.SIGKILL)


def _record_group(db: Database, pgid: int) -> None:
    run_id = _CURRENT_RUN.get()
    if run_id is None:
        return
    with db.session() as session:
        run = session.get(JobRun, run_id)
        if run is not None:
            run.child_pgid = pgid  # start_new_session: the child leads its own group


def job_command(db: Database, settings: Settings, job, now: datetime) -> dict[str, Any]:
    """Run a command in its own process group that dies with the scheduler; its group id is
    recorded on the run before the command starts, so a restarted scheduler stops whatever a
    killed one left running."""
    timeout = job.timeout.total_seconds()
    if shutil.which(job.command[0]) is None:
        raise DependencyError(f"program {job.command[0]!r} not found", fix="install it or correct command")
    gate, go = os.pipe()
    with open(go, "wb", buffering=0) as release:
        with open(gate, "rb", buffering=0) as stdin:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", _GATE, "lorawatch-job", *job.command],
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            )
        try:
            _record_group(db, proc.pid)
        except BaseException:
            _stop_group(proc.pid)  # not recorded: it must not run
            proc.wait()
            raise
        with contextlib.suppress(BrokenPipeError):  # the shell is gone already: its status says why
            release.write(b"go\n")
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(proc.pid)
        proc.communicate()
        raise DependencyError(
            f"command ran longer than {format_duration(job.timeout)} and was stopped",
            fix="raise timeout or speed it up",
        ) from None
    finally:
        _stop_group(proc.pid)  # whatever happened, nothing it started in its group outlives it
    if proc.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-1:] or [""]
        raise DependencyError(f"command exited with status {proc.returncode}: {tail[0][:300]}", fix="see its output")
    return {"returncode": 0, "stdout_tail": stdout.strip()[-500:]}


JOB_KINDS: dict[str, Callable[..., dict[str, Any]]] = {
    "canary": job_canary,
    "alerts": job_alerts,
    "notify": job_notify,
    "prometheus": job_prometheus,
    "lifecycle": job_lifecycle,
    "command": job_command,
}


# --- the long-running scheduler ---

_RUNTIME: dict[str, Any] = {}


def _tick(name: str) -> None:
    """What APScheduler calls at a fire time (a module-level function, so its job store can persist it)."""
    db, settings = _RUNTIME["db"], _RUNTIME["settings"]
    try:
        result = run_job(db, settings, name)
        if result:
            log.info("job %s %s in %.1fs", name, result["status"], result["duration_s"] or 0)
    except Exception:  # noqa: BLE001
        log.exception("job %s could not run", name)


def serve(db: Database, settings: Settings, *, say=print) -> int:
    """Run the scheduler until SIGTERM or SIGINT; running jobs finish before it exits."""
    install_log_scrubber()  # the jobs' logs pass the secret scrubber (also when not started by the CLI)
    _RUNTIME.update(db=db, settings=settings)
    jobs = settings.scheduler.all_jobs
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=db.engine, tablename="apscheduler_jobs")},
        executors={"default": ThreadPoolExecutor(max(4, len(jobs)))},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone="UTC",
    )
    scheduler.start(paused=True)
    for stored in scheduler.get_jobs():
        if stored.id not in jobs:
            stored.remove()
    for name, job in jobs.items():
        trigger = (
            crontab_trigger(job.cron)
            if job.cron
            else IntervalTrigger(seconds=job.every.total_seconds(), start_date=EPOCH, timezone="UTC")
        )
        scheduler.add_job("lorawatch.scheduler:_tick", trigger, args=[name], id=name, name=name, replace_existing=True)
    # whatever was missed while no scheduler ran: run its latest occurrence now (coalesced)
    for name in jobs:
        scheduler.add_job("lorawatch.scheduler:_tick", args=[name], id=f"catch-up-{name}", replace_existing=True)

    def stop(signum, _frame) -> None:
        say(f"lorawatch scheduler: {signal.Signals(signum).name}, finishing running jobs")
        scheduler.shutdown(wait=True)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    say(f"lorawatch scheduler: {len(jobs)} jobs ({', '.join(jobs)}); stop with SIGTERM")
    scheduler.resume()
    while scheduler.running:
        time.sleep(0.2)
    say("lorawatch scheduler: stopped")
    return 0
