"""``lorawatch incident``: the incident lifecycle, rollback with approval, the report export."""

from __future__ import annotations

from pathlib import Path

import click

from lorawatch.cli.context import AppContext, pass_app
from lorawatch.cli.output import emit, json_option, table
from lorawatch.incidents.report import export
from lorawatch.incidents.service import (
    acknowledge,
    add_action_item,
    add_note,
    approve,
    close_action_item,
    list_incidents,
    mitigate,
    open_incident,
    resolve,
    rollback,
    show,
    update,
)


def _show_text(data: dict) -> str:
    lines = [
        f"incident {data['id']}: {data['title']}",
        f"state {data['state']}, severity {data['severity']}, adapter {data['adapter'] or '-'}, commander {data['commander'] or '-'}",
        f"time to detect {data['time_to_detect_min']} min, to acknowledge {data['time_to_acknowledge_min']} min, "
        f"to recover {data['time_to_recover_min']} min",
    ]
    if data.get("alerts"):
        lines.append("alerts:")
        lines += [
            f"  {a['id']} {a['rule']} {a['state']} {a['labels'].get('version', '')} value={a['value']}"
            for a in data["alerts"]
        ]
    if data.get("timeline"):
        lines.append("timeline:")
        lines += [f"  {e['ts']:%Y-%m-%d %H:%M:%SZ} {e['actor']}: {e['kind']}: {e['message']}" for e in data["timeline"]]
    if data.get("action_items"):
        lines.append("action items:")
        lines += [
            f"  {a['id']} [{a['status']}] {a['owner']} due {a['due_on'] or '-'}: {a['description']}"
            for a in data["action_items"]
        ]
    return "\n".join(lines)


@click.group()
def incident() -> None:
    """Incidents: open, acknowledge, note, roll back (with approval), resolve, export the report."""


@incident.command("list")
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved incidents.")
@click.option("--adapter", default=None, help="Only this adapter's incidents.")
@json_option
@pass_app
def list_cmd(app: AppContext, include_resolved, adapter, as_json) -> None:
    """Open incidents (or all of them), newest first."""

    rows = list_incidents(app.database, include_resolved=include_resolved, adapter=adapter)
    emit(
        rows,
        as_json,
        lambda: table(
            rows, ["id", "state", "severity", "adapter", "commander", "opened_at", "time_to_recover_min", "title"]
        ),
    )


@incident.command("show")
@click.argument("incident_id", type=int)
@json_option
@pass_app
def show_cmd(app: AppContext, incident_id, as_json) -> None:
    """One incident: state, times, alerts, timeline and action items."""

    data = show(app.database, incident_id)
    emit(data, as_json, lambda: _show_text(data))


@incident.command("open")
@click.option("--title", required=True, help="What is wrong, in one line.")
@click.option("--adapter", default=None, help="The adapter concerned (needed for rollback).")
@click.option("--severity", type=click.Choice(["critical", "warning", "info"]), default="critical", show_default=True)
@json_option
@pass_app
def open_cmd(app: AppContext, title, adapter, severity, as_json) -> None:
    """Open an incident by hand."""

    data = open_incident(app.database, app.settings, title=title, adapter=adapter, severity=severity, actor=app.actor)
    emit(data, as_json, f"incident {data['id']} opened")


@incident.command("ack")
@click.argument("incident_id", type=int)
@json_option
@pass_app
def ack_cmd(app: AppContext, incident_id, as_json) -> None:
    """Acknowledge: you become the commander unless one is set; its alerts are acknowledged."""

    data = acknowledge(app.database, incident_id, actor=app.actor)
    emit(data, as_json, f"incident {incident_id} acknowledged; commander {data['commander']}")


@incident.command("note")
@click.argument("incident_id", type=int)
@click.argument("text")
@json_option
@pass_app
def note_cmd(app: AppContext, incident_id, text, as_json) -> None:
    """Add a note to the timeline."""

    emit(add_note(app.database, incident_id, text, actor=app.actor), as_json, f"note added to incident {incident_id}")


@incident.command("update")
@click.argument("incident_id", type=int)
@click.option("--summary")
@click.option("--impact")
@click.option("--trigger")
@click.option("--root-cause")
@click.option("--resolution")
@click.option("--went-well")
@click.option("--went-badly")
@click.option("--got-lucky")
@click.option("--commander")
@click.option("--severity", type=click.Choice(["critical", "warning", "info"]))
@json_option
@pass_app
def update_cmd(app: AppContext, incident_id, commander, severity, as_json, **fields) -> None:
    """Edit the review: summary, impact, trigger, root cause, resolution, what went well or badly, luck."""

    data = update(app.database, incident_id, actor=app.actor, commander=commander, severity=severity, **fields)
    emit(data, as_json, f"incident {incident_id} updated")


@incident.command("action")
@click.argument("incident_id", type=int)
@click.option("--description", required=True, help="What must be done.")
@click.option("--owner", required=True, help="Who owns it.")
@click.option("--due", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Due date (YYYY-MM-DD).")
@json_option
@pass_app
def action_cmd(app: AppContext, incident_id, description, owner, due, as_json) -> None:
    """Add an action item (owner, due date)."""

    data = add_action_item(
        app.database,
        incident_id,
        description=description,
        owner=owner,
        due_on=due.date() if due else None,
        actor=app.actor,
    )
    emit(data, as_json, f"action item {data['action_items'][-1]['id']} added")


@incident.command("done")
@click.argument("incident_id", type=int)
@click.argument("item_id", type=int)
@json_option
@pass_app
def done_cmd(app: AppContext, incident_id, item_id, as_json) -> None:
    """Mark an action item done."""

    emit(close_action_item(app.database, incident_id, item_id, actor=app.actor), as_json, f"action item {item_id} done")


@incident.command("approve")
@click.argument("incident_id", type=int)
@click.option("--reason", default=None, help="Why you approve.")
@json_option
@pass_app
def approve_cmd(app: AppContext, incident_id, reason, as_json) -> None:
    """Approve the incident's rollback, as a second responder or the adapter's owner."""

    emit(
        approve(app.database, app.settings, incident_id, actor=app.actor, reason=reason),
        as_json,
        f"rollback of incident {incident_id} approved by {app.actor}",
    )


@incident.command("rollback")
@click.argument("incident_id", type=int)
@click.option("--reason", required=True, help="Why; recorded in the registry and the timeline.")
@click.option("--alias", default="production", show_default=True)
@click.option("--tenant", default="", help="Only this tenant's alias (default: the route default).")
@json_option
@pass_app
def rollback_cmd(app: AppContext, incident_id, reason, alias, tenant, as_json) -> None:
    """Point the adapter's alias back at its previous version (approval first, when configured)."""

    data = rollback(app.database, app.settings, incident_id, actor=app.actor, reason=reason, alias=alias, tenant=tenant)
    emit(data, as_json, lambda: next(e["message"] for e in reversed(data["timeline"]) if e["kind"] == "rollback"))


@incident.command("mitigate")
@click.argument("incident_id", type=int)
@click.option("--note", required=True, help="What stopped the impact.")
@json_option
@pass_app
def mitigate_cmd(app: AppContext, incident_id, note, as_json) -> None:
    """Mark the incident mitigated without a rollback."""

    emit(
        mitigate(app.database, app.settings, incident_id, actor=app.actor, note=note),
        as_json,
        f"incident {incident_id} mitigated",
    )


@incident.command("resolve")
@click.argument("incident_id", type=int)
@click.option("--note", default=None)
@json_option
@pass_app
def resolve_cmd(app: AppContext, incident_id, note, as_json) -> None:
    """Resolve the incident."""

    data = resolve(app.database, app.settings, incident_id, actor=app.actor, note=note)
    emit(data, as_json, f"incident {incident_id} resolved; time to recover {data['time_to_recover_min']} min")


@incident.command("export")
@click.argument("incident_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["md", "html", "pdf"]), default="md", show_default=True)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="Output file.")
@json_option
@pass_app
def export_cmd(app: AppContext, incident_id, fmt, out, as_json) -> None:
    """Export the post-incident report (md with its charts beside it, self-contained html, or pdf)."""

    result = export(app.database, app.settings, incident_id, fmt=fmt, out=out)
    emit(result, as_json, f"wrote {', '.join(result['files'])}")
