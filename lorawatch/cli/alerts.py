"""``lorawatch alerts`` and ``lorawatch notify``: rules, alert states, silences, the outbox."""

from __future__ import annotations

from pathlib import Path

import click
from sqlalchemy import select

from lorawatch.alerts.engine import acknowledge, describe, evaluate, find_alert, known_adapters, list_alerts
from lorawatch.alerts.rules import load_file, load_rules
from lorawatch.alerts.silences import add_silence, expire_silence, list_silences
from lorawatch.cli.context import AppContext, pass_app
from lorawatch.cli.output import emit, json_option, parse_duration_option, parse_time, table
from lorawatch.db.models import AlertEvent
from lorawatch.db.types import utcnow
from lorawatch.errors import InputError, did_you_mean
from lorawatch.monitors.traffic_eval import evaluate_traffic
from lorawatch.plugins import load_default_plugins


@click.group()
def alerts() -> None:
    """Alert rules, alerts, acknowledgements and silences."""


@alerts.command("evaluate")
@click.option("--at", "at", default=None, help="Evaluate as of this UTC time (ISO 8601; default now).")
@click.option("--no-traffic", is_flag=True, help="Do not compute the traffic monitors first.")
@json_option
@pass_app
def evaluate_cmd(app: AppContext, at, no_traffic, as_json) -> None:
    """Evaluate every rule now, store alert states and queue due notifications in the outbox."""

    load_default_plugins()
    now = parse_time(at, "--at") or utcnow()
    if not no_traffic:
        evaluate_traffic(app.database, app.settings, now=now)
    result = evaluate(app.database, app.settings, now=now)

    def text() -> str:
        lines = [
            f"{result['rules']} rules over {result['series']} series: {result['firing']} firing, "
            f"{result['pending']} pending; {result['notifications_queued']} notifications queued"
            + (
                " (new alert groups wait for their route's group_wait; `lorawatch notify flush` sends what is "
                "due, `notify flush --no-wait` sends them now)"
                if result["firing"] and not result["notifications_queued"]
                else ""
            )
        ]
        lines += [
            f"  {t['rule']} {t['labels'].get('adapter', '')}: {t['from']} -> {t['to']}" for t in result["transitions"]
        ]
        return "\n".join(lines)

    emit(result, as_json, text)


@alerts.command("list")
@click.option(
    "--state",
    type=click.Choice(["open", "firing", "pending", "resolved", "inactive", "silenced", "all"]),
    default="open",
    show_default=True,
    help="Which alerts.",
)
@click.option("--adapter", default=None, help="Only this adapter's alerts.")
@json_option
@pass_app
def list_cmd(app: AppContext, state, adapter, as_json) -> None:
    """Alerts, firing first, then by severity."""

    if adapter and adapter not in (known := known_adapters(app.database)):
        raise InputError(f'no adapter "{adapter}"' + did_you_mean(adapter, known), fix="check the name")
    rows = list_alerts(app.database, app.settings, state=state, adapter=adapter)

    def text() -> str:
        view = [
            {
                "id": r["id"],
                "state": r["state"]
                + ("/acked" if r["acked_by"] else "")
                + ("/silenced" if r["silenced_by"] else "")
                + ("/inhibited" if r["inhibited"] else ""),
                "severity": r["severity"],
                "rule": r["rule"],
                "adapter": r["labels"].get("adapter"),
                "version": r["labels"].get("version"),
                "value": r["value"],
                "since": r["fired_at"] or r["active_at"],
                "summary": (r["annotations"].get("summary") or "")[:70],
            }
            for r in rows
        ]
        return table(view)

    emit(rows, as_json, text)


@alerts.command("show")
@click.argument("alert")
@json_option
@pass_app
def show_cmd(app: AppContext, alert, as_json) -> None:
    """One alert (by id or fingerprint) with its state history and runbook."""

    with app.database.session() as session:
        row = find_alert(session, alert)
        data = describe(row)
        data["events"] = [
            {"ts": e.ts, "from": e.from_state, "to": e.to_state, "value": e.value, "actor": e.actor}
            for e in session.scalars(select(AlertEvent).where(AlertEvent.alert_id == row.id).order_by(AlertEvent.id))
        ]

    def text() -> str:
        lines = [
            f"alert {data['id']} ({data['fingerprint']}): {data['rule']} {data['state']} {data['severity']}",
            f"labels: {data['labels']}",
        ]
        lines += [f"{k}: {v}" for k, v in data["annotations"].items()]
        lines.append(f"runbook: {data['runbook_url']}")
        lines += [
            f"  {e['ts']:%Y-%m-%d %H:%M:%SZ} {e['from']} -> {e['to']}" + (f" by {e['actor']}" if e["actor"] else "")
            for e in data["events"]
        ]
        return "\n".join(lines)

    emit(data, as_json, text)


@alerts.command("ack")
@click.argument("alert")
@click.option("--comment", default=None, help="What you are doing about it.")
@json_option
@pass_app
def ack_cmd(app: AppContext, alert, comment, as_json) -> None:
    """Acknowledge an open alert (by id or fingerprint): it is no longer repeated."""

    data = acknowledge(app.database, alert, actor=app.actor, comment=comment)
    emit(data, as_json, f"alert {data['id']} acknowledged by {data['acked_by']}")


@alerts.command("silence")
@click.option(
    "--matcher",
    "-m",
    "matchers",
    multiple=True,
    required=True,
    help='Label matcher, repeatable: adapter="support-bot", alertname=~"latency_.*".',
)
@click.option("--duration", default=None, help="How long: 30m, 2h, 1d (default 2h).")
@click.option("--until", "until", default=None, help="Until this UTC time (ISO 8601), instead of --duration.")
@click.option("--comment", required=True, help="Why (shown to everyone).")
@json_option
@pass_app
def silence_cmd(app: AppContext, matchers, duration, until, comment, as_json) -> None:
    """Silence the notifications of alerts matching every matcher."""

    data = add_silence(
        app.database,
        matchers=list(matchers),
        duration=parse_duration_option(duration or "2h") if not until else None,
        until=parse_time(until, "--until"),
        comment=comment,
        actor=app.actor,
    )
    emit(
        data, as_json, f"silence {data['id']} until {data['ends_at']:%Y-%m-%d %H:%M:%SZ}: {', '.join(data['matchers'])}"
    )


@alerts.command("silences")
@click.option("--all", "include_expired", is_flag=True, help="Include expired silences.")
@json_option
@pass_app
def silences_cmd(app: AppContext, include_expired, as_json) -> None:
    """Silences in force (or all of them)."""

    rows = list_silences(app.database, include_expired=include_expired)
    emit(
        rows, as_json, lambda: table(rows, ["id", "state", "matchers", "starts_at", "ends_at", "created_by", "comment"])
    )


@alerts.command("expire")
@click.argument("silence_id", type=int)
@json_option
@pass_app
def expire_cmd(app: AppContext, silence_id, as_json) -> None:
    """End a silence now."""

    data = expire_silence(app.database, silence_id, actor=app.actor)
    emit(data, as_json, f"silence {silence_id} expired")


@alerts.command("rules")
@click.option(
    "--check",
    "check_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Validate this rules file (exit 2 with file:line and rule id when it is wrong).",
)
@json_option
@pass_app
def rules_cmd(app: AppContext, check_file, as_json) -> None:
    """The rules in force (built-in and yours), or validate a rules file."""

    if check_file:
        rules = load_file(Path(check_file), strict=True)
        emit([r.describe() for r in rules], as_json, f"{check_file}: {len(rules)} rules, valid")
        return
    rows = [r.describe() for r in load_rules(app.settings)]
    emit(rows, as_json, lambda: table(rows, ["id", "source", "condition", "for", "severity", "file"]))
