"""``lorawatch scheduler`` and ``lorawatch jobs``: scheduled jobs and their run history."""

from __future__ import annotations

import click

from lorawatch import scheduler as sched
from lorawatch.cli.context import AppContext, pass_app
from lorawatch.cli.output import emit, json_option, parse_time, table
from lorawatch.db.types import utcnow
from lorawatch.errors import InputError
from lorawatch.jobs import history, list_jobs
from lorawatch.scheduler import run_now


@click.command()
@click.option("--once", is_flag=True, help="Run what is due and exit (for cron and Kubernetes CronJobs).")
@click.option(
    "--at", "at", default=None, help="With --once: act as if it were this UTC time (ISO 8601), for backfills and tests."
)
@click.option("--job", "only", multiple=True, help="With --once: only these jobs.")
@json_option
@pass_app
def scheduler(app: AppContext, once, at, only, as_json) -> None:
    """Run the scheduled jobs: the weekly canary, alert evaluation, outbox flushes, pulls, lifecycle.

    Any number of schedulers may share one database: each occurrence of a job runs once.
    SIGTERM lets running jobs finish, then exits.
    """

    if (at or only) and not once:
        raise InputError("--at and --job go with --once", fix="add --once")
    settings, database = app.settings, app.database
    if not once:
        raise SystemExit(sched.serve(database, settings, say=lambda m: click.echo(m, err=True)))
    clock = utcnow
    if at:
        start, offset = parse_time(at, "--at") or utcnow(), utcnow()
        clock = lambda: start + (utcnow() - offset)  # noqa: E731
    runs = sched.run_due(database, settings, clock=clock, only=list(only) or None)
    emit(
        runs,
        as_json,
        lambda: (
            table(runs, ["job", "scheduled_for", "attempt", "status", "duration_s", "error"]) if runs else "nothing due"
        ),
    )
    if any(r["status"] == "failed" for r in runs):
        raise SystemExit(1)


@click.group()
def jobs() -> None:
    """Scheduled jobs: their schedules, last runs and history; run one now."""


@jobs.command("list")
@json_option
@pass_app
def list_cmd(app: AppContext, as_json) -> None:
    """Each job with its schedule, next run and last run."""

    rows = list_jobs(app.database, app.settings)
    emit(
        rows,
        as_json,
        lambda: table(
            rows,
            ["job", "kind", "schedule", "next_run", "last_status", "last_started", "last_duration_s", "last_error"],
        ),
    )


@jobs.command("history")
@click.option("--job", default=None, help="Only this job.")
@click.option("--limit", default=50, show_default=True)
@json_option
@pass_app
def history_cmd(app: AppContext, job, limit, as_json) -> None:
    """The run history: start, end, status, error and duration of each run, newest first."""

    rows = history(app.database, job=job, limit=limit)
    emit(
        rows,
        as_json,
        lambda: table(
            rows,
            ["id", "job", "scheduled_for", "attempt", "trigger", "status", "started_at", "duration_s", "host", "error"],
        ),
    )


@jobs.command("run")
@click.argument("name")
@json_option
@pass_app
def run_cmd(app: AppContext, name, as_json) -> None:
    """Run one job now, outside its schedule (refused while it runs elsewhere)."""

    result = run_now(app.database, app.settings, name)
    emit(
        result,
        as_json,
        f"job {name}: {result['status']} in {result['duration_s']}s"
        + (f": {result['error']}" if result["error"] else ""),
    )
    if result["status"] == "failed":
        raise SystemExit(1)
