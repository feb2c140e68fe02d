"""``lorawatch notify``: deliver the notification outbox and read the notification log.

Kept apart from ``lorawatch alerts`` so a flush (every 30 s from cron or the scheduler's unit)
loads only the outbox, not the monitors."""

from __future__ import annotations

import click

from lorawatch.alerts.outbox import flush, list_notifications, retry
from lorawatch.cli.context import AppContext, pass_app
from lorawatch.cli.output import emit, json_option, parse_duration_option, table


@click.group()
def notify() -> None:
    """The notification outbox: deliver it, and read the notification log."""


@notify.command("flush")
@click.option("--deadline", default=None, help="Keep retrying for at most this long (default [alerts] flush_deadline).")
@click.option("--receiver", "receivers", multiple=True, help="Only these receivers.")
@click.option("--no-wait", is_flag=True, help="Send new alert groups now instead of after group_wait.")
@json_option
@pass_app
def flush_cmd(app: AppContext, deadline, receivers, no_wait, as_json) -> int:
    """Queue due group notifications, then deliver everything pending, with retries.

    Exits 3 when something claimed in this flush was not delivered (deferred to the next flush
    or failed for good), so a cron job or a CI step notices; 0 when everything went out."""

    result = flush(
        app.database,
        app.settings,
        deadline_s=parse_duration_option(deadline).total_seconds() if deadline else None,
        receivers=list(receivers) or None,
        skip_group_wait=no_wait,
    )
    emit(
        result,
        as_json,
        f"{result['delivered']} delivered, {result['deferred']} deferred for the next flush, "
        f"{result['failed']} failed for good ({result['attempts']} attempts, {result['pending']} pending "
        "in the outbox; `lorawatch notify list --status failed` lists failures)",
    )
    return 3 if result["deferred"] or result["failed"] else 0


@notify.command("list")
@click.option("--status", type=click.Choice(["pending", "sent", "failed"]), default=None, help="Only this status.")
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
@json_option
@pass_app
def notify_list_cmd(app: AppContext, status, limit, as_json) -> None:
    """The notification log: what was queued for whom, delivered when, or why not yet."""

    rows = list_notifications(app.database, status=status, limit=limit)
    emit(
        rows,
        as_json,
        lambda: table(
            rows,
            [
                "id",
                "receiver",
                "status",
                "payload_status",
                "alerts",
                "attempts",
                "created_at",
                "delivered_at",
                "last_error",
            ],
        ),
    )


@notify.command("retry")
@click.argument("notification_id", type=int)
@json_option
@pass_app
def retry_cmd(app: AppContext, notification_id: int, as_json: bool) -> None:
    """Send a failed notification again (at the next flush, with a fresh attempt budget)."""
    result = retry(app.database, notification_id, actor=app.actor)
    emit(result, as_json, f"notification {notification_id} to {result['receiver']} is pending again")
