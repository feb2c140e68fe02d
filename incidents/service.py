"""The incident lifecycle. Every function records its own timeline event, so the timeline is
complete without anyone writing it: alerts firing and resolving, acknowledgements, notes,
approvals, rollbacks, notices and state changes, each with actor and time.

States: triggered -> acknowledged -> mitigated -> resolved (a step may be skipped: a rollback
mitigates a triggered incident, resolving closes any). Incidents open by themselves from
firing alerts whose severity is in ``[incidents] auto_open_severities`` (one open incident per
adapter collects its alerts), or by hand.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorawatch import audit
from lorawatch.db import Database
from lorawatch.db.models import (
    ActionItem,
    AdapterRecord,
    AdapterVersion,
    Alert,
    AliasEvent,
    Incident,
    IncidentAlert,
    IncidentApproval,
    IncidentEvent,
    Notification,
)
from lorawatch.db.types import utcnow
from lorawatch.errors import ConflictError, InputError, NotFoundError
from lorawatch.registry import aliases as registry_aliases
from lorawatch.settings import Settings

STATES = ("triggered", "acknowledged", "mitigated", "resolved")
TEXT_FIELDS = ("summary", "impact", "trigger", "root_cause", "resolution", "went_well", "went_badly", "got_lucky")


def event(
    session: Session,
    incident: Incident,
    kind: str,
    message: str,
    *,
    actor: str,
    ts: datetime,
    details: dict[str, Any] | None = None,
) -> IncidentEvent:
    """Append one line to the incident's timeline."""
    row = IncidentEvent(incident_id=incident.id, ts=ts, actor=actor, kind=kind, message=message, details=details)
    session.add(row)
    return row


def get(session: Session, incident_id: int) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFoundError(f"incident {incident_id} does not exist", fix="see `lorawatch incident list --all`")
    return incident


def _open(
    session: Session,
    settings: Settings,
    *,
    title: str,
    adapter: str | None,
    severity: str,
    actor: str,
    now: datetime,
    source: str,
    impact_started_at: datetime | None = None,
) -> Incident:
    incident = Incident(
        title=title,
        adapter=adapter,
        severity=severity,
        state="triggered",
        source=source,
        opened_at=now,
        opened_by=actor,
        impact_started_at=impact_started_at,
    )
    session.add(incident)
    session.flush()
    event(
        session,
        incident,
        "opened",
        f"incident opened ({source}): {title}",
        actor=actor,
        ts=now,
        details={"severity": severity, "adapter": adapter},
    )
    audit.record(
        session,
        actor=actor,
        action="incident.open",
        object_type="incident",
        object_id=str(incident.id),
        reason=title,
        ts=now,
    )
    queue_notices(session, settings, incident, "opened", now=now, actor=actor)
    return incident


def open_incident(
    db: Database,
    settings: Settings,
    *,
    title: str,
    adapter: str | None,
    severity: str,
    actor: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Open an incident by hand."""
    if severity not in ("critical", "warning", "info"):
        raise InputError(f"severity {severity!r} is not one of critical, warning, info", fix="pass --severity critical")
    now = now or utcnow()
    with db.session() as session:
        if adapter is not None and session.scalar(select(AdapterRecord).where(AdapterRecord.name == adapter)) is None:
            raise NotFoundError(f"adapter {adapter!r} is not registered", fix="see `lorawatch registry list`")
        incident = _open(
            session, settings, title=title, adapter=adapter, severity=severity, actor=actor, now=now, source="manual"
        )
        return describe(session, incident)


def _impact_start(session: Session, alert: Alert) -> datetime | None:
    """When the impact began: the promotion of the alert's version, else the alert's activation."""
    adapter, version = alert.labels.get("adapter"), alert.labels.get("version")
    if adapter and version:
        row = session.execute(
            select(AliasEvent.ts)
            .join(AdapterVersion, AdapterVersion.id == AliasEvent.to_version_id)
            .join(AdapterRecord, AdapterRecord.id == AdapterVersion.adapter_id)
            .where(
                AdapterRecord.name == adapter,
                AdapterVersion.version == version,
                AliasEvent.ts <= (alert.active_at or utcnow()),
            )
            .order_by(AliasEvent.ts.desc())
        ).first()
        if row:
            return row[0]
    return alert.active_at


def sync_with_alerts(
    session: Session, settings: Settings, now: datetime, transitions: list[dict[str, Any]], muted: set[str]
) -> list[int]:
    """Open incidents for new firing alerts and record alert changes on open incidents' timelines.

    Runs in the alert evaluation's transaction. Returns the ids of incidents opened.
    """
    severities = set(settings.incidents.auto_open_severities)
    opened: list[int] = []
    firing = session.scalars(select(Alert).where(Alert.state == "firing", Alert.severity.in_(severities))).all()
    # the open incident each of these alerts is linked to (an alert may also be linked to resolved ones)
    ids = {a.id for a in firing} | {t["alert"] for t in transitions}
    linked = dict(
        session.execute(
            select(IncidentAlert.alert_id, IncidentAlert.incident_id)
            .join(Incident, Incident.id == IncidentAlert.incident_id)
            .where(IncidentAlert.alert_id.in_(ids), Incident.state != "resolved")
        ).all()
    )
    for alert in firing:
        if alert.id in linked:
            continue
        if alert.fingerprint in muted:
            continue
        adapter = alert.labels.get("adapter")
        incident = None
        if adapter:
            incident = session.scalar(
                select(Incident)
                .where(Incident.adapter == adapter, Incident.state != "resolved")
                .order_by(Incident.id.desc())
            )
        if incident is None:
            title = alert.annotations.get("summary") or f"{alert.rule_id} on {adapter or 'the platform'}"
            incident = _open(
                session,
                settings,
                title=title,
                adapter=adapter,
                severity=alert.severity,
                actor="lorawatch",
                now=now,
                source="alert",
                impact_started_at=_impact_start(session, alert),
            )
            opened.append(incident.id)
        elif alert.severity == "critical" and incident.severity != "critical":
            event(
                session,
                incident,
                "updated",
                f"severity {incident.severity} -> critical (alert {alert.rule_id})",
                actor="lorawatch",
                ts=now,
            )
            incident.severity = "critical"
        session.add(IncidentAlert(incident_id=incident.id, alert_id=alert.id, linked_at=now))
        linked[alert.id] = incident.id
        event(
            session,
            incident,
            "alert_fired",
            f"alert {alert.rule_id} fired on {adapter or '-'} {alert.labels.get('version', '')}: "
            f"{alert.annotations.get('summary', '')}".strip(),
            actor="lorawatch",
            ts=alert.fired_at or now,
            details={"alert": alert.id, "fingerprint": alert.fingerprint, "value": alert.value, "labels": alert.labels},
        )
    for t in transitions:
        incident_id = linked.get(t["alert"])
        if incident_id is None or t["to"] != "resolved":
            continue
        incident = session.get(Incident, incident_id)
        if incident.state != "resolved":
            event(
                session,
                incident,
                "alert_resolved",
                f"alert {t['rule']} resolved on {t['labels'].get('adapter', '-')}",
                actor="lorawatch",
                ts=now,
                details={"alert": t["alert"], "value": t["value"]},
            )
    return opened


def _acted_on(incident: Incident, actor: str, now: datetime) -> None:
    """Rolling back, mitigating or resolving an incident acknowledges it, as ``acknowledge``
    does: it is acknowledged now unless it was, and the actor is commander unless one is set."""
    incident.acked_at = incident.acked_at or now
    incident.commander = incident.commander or actor


def acknowledge(db: Database, incident_id: int, *, actor: str, now: datetime | None = None) -> dict[str, Any]:
    """Acknowledge: the actor becomes commander unless one is set; its alerts are acknowledged too."""
    now = now or utcnow()
    with db.session() as session:
        incident = get(session, incident_id)
        if incident.state != "triggered":
            raise ConflictError(
                f"incident {incident_id} is {incident.state}; only a triggered incident is acknowledged"
            )
        incident.state, incident.acked_at = "acknowledged", now
        incident.commander = incident.commander or actor
        event(
            session,
            incident,
            "acknowledged",
            f"acknowledged by {actor}; commander: {incident.commander}",
            actor=actor,
            ts=now,
        )
        for alert in _alerts(session, incident):
            if alert.state in ("pending", "firing") and alert.acked_at is None:
                alert.acked_by, alert.acked_at, alert.ack_comment = actor, now, f"incident {incident.id}"
        audit.record(
            session, actor=actor, action="incident.ack", object_type="incident", object_id=str(incident_id), ts=now
        )
        return describe(session, incident)


def add_note(db: Database, incident_id: int, text: str, *, actor: str, now: datetime | None = None) -> dict[str, Any]:
    if not text.strip():
        raise InputError("a note cannot be empty", fix="write what you saw or did")
    now = now or utcnow()
    with db.session() as session:
        incident = get(session, incident_id)
        event(session, incident, "note", text.strip(), actor=actor, ts=now)
        return describe(session, incident)


def update(
    db: Database,
    incident_id: int,
    *,
    actor: str,
    now: datetime | None = None,
    commander: str | None = None,
    severity: str | None = None,
    **fields: str | None,
) -> dict[str, Any]:
    """Edit the review's text fields (root cause, what went well, ...), the commander or severity."""
    unknown = set(fields) - set(TEXT_FIELDS)
    if unknown:
        raise InputError(f"unknown field {sorted(unknown)[0]!r}", fix=f"use one of {', '.join(TEXT_FIELDS)}")
    if severity is not None and severity not in ("critical", "warning", "info"):
        raise InputError(
            f"severity {severity!r} is not one of critical, warning, info", fix="pass critical, warning or info"
        )
    now = now or utcnow()
    with db.session() as session:
        incident = get(session, incident_id)
        changed = []
        for name, value in fields.items():
            if value is not None:
                setattr(incident, name, value.strip())
                changed.append(name)
        if commander:
            incident.commander = commander
            changed.append("commander")
        if severity:
            incident.severity = severity
            changed.append("severity")
        if changed:
            event(
                session,
                incident,
                "updated",
                f"{', '.join(changed)} edited",
                actor=actor,
                ts=now,
                details={k: getattr(incident, k) for k in changed},
            )
        return describe(session, incident)


def add_action_item(
    db: Database,
    incident_id: int,
    *,
    description: str,
    owner: str,
    due_on: date | None,
    actor: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    now = now or utcnow()
    with db.session() as session:
        incident = get(session, incident_id)
        item = ActionItem(
            incident_id=incident.id,
            description=description,
            owner=owner,
            due_on=due_on,
            created_by=actor,
            created_at=now,
        )
        session.add(item)
        session.flush()
        event(
            session,
            incident,
            "action_item",
            f"action item {item.id} for {owner}" + (f" due {due_on}" if due_on else "") + f": {description}",
            actor=actor,
            ts=now,
        )
        return describe(session, incident)


def close_action_item(
    db: Database, incident_id: int, item_id: int, *, actor: str, now: datetime | None = None
) -> dict[str, Any]:
    now = now or utcnow()
    with db.session() as session:
        incident = get(session, incident_id)
        item = session.get(ActionItem, item_id)
        if item is None or item.incident_id != incident.id:
            raise NotFoundError(
                f"incident {incident_id} has no action item {item_id}", fix="see `lorawatch incident show`"
            )
        item.status = "done"
        event(session, incident, "action_item", f"action item {item_id} done", actor=actor, ts=now)
        return describe(session, incident)


def _owners(session: Session, settings: Settings, incident: Incident) -> set[str]:
    """Who counts as the adapter's owner: the production version's ownership contacts and team approvers."""
    owners: set[str] = set()
    if not incident.adapter:
        return owners
    versions = session.scalars(
        select(AdapterVersion)
        .join(AdapterRecord, AdapterRecord.id == AdapterVersion.adapter_id)
        .where(AdapterRecord.name == incident.adapter)
    )
    for v in versions:
        owners |= {str(c) for c in (v.ownership or {}).get("contacts", [])}
        if v.owner_team:
            owners |= set(settings.incidents.owner_approvers.get(v.owner_team, []))
    return owners


def approve(
    db: Database,
    settings: Settings,
    incident_id: int,
    *,
    actor: str,
    reason: str | None = None,
    action: str = "rollback",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Record a responder's approval of a rollback (used by the next rollback of this incident)."""
    now = now or utcnow()
    with db.session() as session:
        incident = get(session, incident_id)
        if incident.state == "resolved":
            raise ConflictError(f"incident {incident_id} is resolved; nothing to approve")
        session.add(IncidentApproval(incident_id=incident.id, action=action, approver=actor, reason=reason, ts=now))
        owner = actor in _owners(session, settings, incident)
        event(
            session,
            incident,
            "approval",
            f"{action} approved by {actor}" + (" (owner)" if owner else "") + (f": {reason}" if reason else ""),
            actor=actor,
            ts=now,
        )
        audit.record(
            session,
            actor=actor,
            action="incident.approve",
            object_type="incident",
            object_id=str(incident_id),
            reason=reason,
            details={"action": action},
            ts=now,
        )
        return describe(session, incident)


def _approval_for(
    session: Session, settings: Settings, incident: Incident, actor: str
) -> IncidentApproval | None | bool:
    """The approval that lets ``actor`` roll back (True when none is needed); None when missing."""
    policy = settings.incidents.rollback_approval
    if policy == "none":
        return True
    owners = _owners(session, settings, incident)
    if policy == "owner" and actor in owners:
        return True
    approvals = session.scalars(
        select(IncidentApproval).where(
            IncidentApproval.incident_id == incident.id,
            IncidentApproval.action == "rollback",
            IncidentApproval.used_at.is_(None),
        )
    ).all()
    for approval in approvals:
        if policy == "second_responder" and approval.approver != actor:
            return approval
        if policy == "owner" and approval.approver in owners:
            return approval
    return None


def _refuse_a_second_rollback(session: Session, incident: Incident, alias: str, tenant: str) -> None:
    """A rollback this incident already made, whose version the alias still serves, is not made
    again: a second click (or a retried command) would step back one more version, past the one
    on-call chose. Going further back is a deliberate promotion."""
    done = session.scalars(
        select(IncidentEvent)
        .where(IncidentEvent.incident_id == incident.id, IncidentEvent.kind == "rollback")
        .order_by(IncidentEvent.ts.desc(), IncidentEvent.id.desc())
    ).all()
    last = next(
        (
            e
            for e in done
            if (e.details or {}).get("alias") == alias and ((e.details or {}).get("tenant") or "") == tenant
        ),
        None,
    )
    if last is None or incident.adapter is None:
        return
    serving = registry_aliases.resolve_alias(session, incident.adapter, alias, tenant)
    if serving is not None and serving.version == (last.details or {}).get("to"):
        raise ConflictError(
            f"incident {incident.id} rolled {incident.adapter} {alias} back from {last.details['from']} to "
            f"{last.details['to']} already ({last.ts:%Y-%m-%d %H:%M} UTC, {last.actor}); nothing was changed",
            fix=f"to go further back, promote the version you want: `lorawatch registry promote {incident.adapter} "
            f"--version VERSION --alias {alias} --reason ...`",
        )


def rollback(
    db: Database,
    settings: Settings,
    incident_id: int,
    *,
    actor: str,
    reason: str,
    alias: str = "production",
    tenant: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """Point the incident's adapter alias back at its previous version, through the registry.

    Refused, with nothing changed, when the configured approval is missing.
    """

    if not reason or not reason.strip():
        raise InputError("a rollback needs a reason", fix='pass --reason "..."')
    now = now or utcnow()
    with db.session() as session:
        incident = get(session, incident_id)
        if incident.adapter is None:
            raise ConflictError(
                f"incident {incident_id} concerns no adapter", fix="use `lorawatch registry rollback` directly"
            )
        if incident.state == "resolved":
            raise ConflictError(
                f"incident {incident_id} is resolved", fix="open a new incident or use `lorawatch registry rollback`"
            )
        _refuse_a_second_rollback(session, incident, alias, tenant)
        approval = _approval_for(session, settings, incident, actor)
        if approval is None:
            who = (
                "someone other than you (a second responder)"
                if settings.incidents.rollback_approval == "second_responder"
                else f"one of the owners of {incident.adapter} ({', '.join(sorted(_owners(session, settings, incident))) or 'none recorded'})"
            )
            raise ConflictError(
                f"rolling back {incident.adapter} needs approval by {who}; nothing was changed",
                where=f"incident {incident_id}",
                fix=f"ask them to run `lorawatch incident approve {incident_id} --reason ...`, then roll back again",
            )
        change = registry_aliases.rollback(
            session,
            adapter=incident.adapter,
            alias=alias,
            tenant=tenant,
            actor=actor,
            reason=f"incident {incident_id}: {reason}",
            at=now,
        )
        versions = {
            v.id: v.version
            for v in session.scalars(
                select(AdapterVersion).where(AdapterVersion.id.in_([change.from_version_id, change.to_version_id]))
            )
        }
        if isinstance(approval, IncidentApproval):
            approval.used_at = now
        event(
            session,
            incident,
            "rollback",
            f"rolled back {incident.adapter} {alias}{'/' + tenant if tenant else ''} from "
            f"{versions.get(change.from_version_id)} to {versions.get(change.to_version_id)}: {reason}",
            actor=actor,
            ts=now,
            details={
                "alias": alias,
                "tenant": tenant,
                "from": versions.get(change.from_version_id),
                "to": versions.get(change.to_version_id),
                "alias_event": change.id,
                "approved_by": approval.approver if isinstance(approval, IncidentApproval) else None,
            },
        )
        before = incident.state
        if incident.state in ("triggered", "acknowledged"):
            incident.state, incident.mitigated_at = "mitigated", now
            _acted_on(incident, actor, now)
            event(session, incident, "state", f"{before} -> mitigated", actor=actor, ts=now)
        audit.record(
            session,
            actor=actor,
            action="incident.rollback",
            object_type="incident",
            object_id=str(incident_id),
            reason=reason,
            details={"alias_event": change.id},
            ts=now,
        )
        queue_notices(session, settings, incident, "mitigated", now=now, actor=actor)
        return describe(session, incident)


def mitigate(
    db: Database, settings: Settings, incident_id: int, *, actor: str, note: str, now: datetime | None = None
) -> dict[str, Any]:
    """Mark an incident mitigated without a rollback (a fix elsewhere stopped the impact)."""
    now = now or utcnow()
    with db.session() as session:
        incident = get(session, incident_id)
        if incident.state not in ("triggered", "acknowledged"):
            raise ConflictError(f"incident {incident_id} is {incident.state}")
        before = incident.state
        incident.state, incident.mitigated_at = "mitigated", now
        _acted_on(incident, actor, now)
        event(session, incident, "state", f"{before} -> mitigated: {note}", actor=actor, ts=now)
        queue_notices(session, settings, incident, "mitigated", now=now, actor=actor)
        return describe(session, incident)


def resolve(
    db: Database,
    settings: Settings,
    incident_id: int,
    *,
    actor: str,
    note: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Resolve an incident (its alerts may resolve later on their own)."""
    now = now or utcnow()
    with db.session() as session:
        incident = get(session, incident_id)
        if incident.state == "resolved":
            raise ConflictError(f"incident {incident_id} is already resolved")
        before = incident.state
        incident.state, incident.resolved_at = "resolved", now
        _acted_on(incident, actor, now)
        incident.mitigated_at = incident.mitigated_at or now
        event(session, incident, "state", f"{before} -> resolved" + (f": {note}" if note else ""), actor=actor, ts=now)
        audit.record(
            session,
            actor=actor,
            action="incident.resolve",
            object_type="incident",
            object_id=str(incident_id),
            reason=note,
            ts=now,
        )
        queue_notices(session, settings, incident, "resolved", now=now, actor=actor)
        return describe(session, incident)


def queue_notices(
    session: Session, settings: Settings, incident: Incident, what: str, *, now: datetime, actor: str
) -> list[str]:
    """Queue notices to the owner team's receiver and the severity's stakeholder receivers (through the outbox)."""
    receivers: list[str] = []
    if incident.adapter:
        team = session.scalar(
            select(AdapterVersion.owner_team)
            .join(AdapterRecord, AdapterRecord.id == AdapterVersion.adapter_id)
            .where(AdapterRecord.name == incident.adapter, AdapterVersion.owner_team.is_not(None))
            .order_by(AdapterVersion.id.desc())
        )
        if team and team in settings.incidents.owner_receivers:
            receivers.append(settings.incidents.owner_receivers[team])
    receivers += [r for r in settings.incidents.notices.get(incident.severity, []) if r not in receivers]
    for name in receivers:
        payload = notice_payload(settings, incident, what, now)
        session.add(Notification(receiver=name, status="pending", payload=payload, created_at=now, next_attempt_at=now))
        event(
            session,
            incident,
            "notice",
            f"notice ({what}) queued to {name}",
            actor=actor,
            ts=now,
            details={"receiver": name},
        )
    return receivers


def notice_payload(settings: Settings, incident: Incident, what: str, now: datetime) -> dict[str, Any]:
    """An incident notice in the Alertmanager v4 shape, so every channel can render it."""
    url = f"{settings.alerts.dashboard_url.rstrip('/')}/incidents?incident={incident.id}"
    status = "resolved" if what == "resolved" else "firing"
    labels = {
        "alertname": "incident",
        "incident": str(incident.id),
        "severity": incident.severity,
        **({"adapter": incident.adapter} if incident.adapter else {}),
    }
    iso = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    summary = f"Incident {incident.id} {what}: {incident.title}"
    alert = {
        "status": status,
        "labels": labels,
        "annotations": {
            "summary": summary,
            "description": f"State: {incident.state}. Commander: {incident.commander or 'none yet'}.",
            "runbook_url": url,
        },
        "startsAt": incident.opened_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "endsAt": iso if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": url,
        "fingerprint": f"incident-{incident.id}",
        "value": None,
        "threshold": None,
        "acknowledged": False,
    }
    return {
        "version": "4",
        "groupKey": f"incident:{incident.id}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "",
        "groupLabels": {"incident": str(incident.id)},
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": settings.alerts.dashboard_url,
        "alerts": [alert],
        "lorawatch": {"sentAt": iso, "repeatIntervalSeconds": 4 * 3600, "incident": incident.id},
    }


def _alerts(session: Session, incident: Incident) -> list[Alert]:
    return list(
        session.scalars(
            select(Alert)
            .join(IncidentAlert, IncidentAlert.alert_id == Alert.id)
            .where(IncidentAlert.incident_id == incident.id)
            .order_by(Alert.id)
        )
    )


def metrics(incident: Incident) -> dict[str, float | None]:
    """Minutes to detect (impact start to opening), to acknowledge and to recover (to mitigation)."""

    def minutes(a: datetime | None, b: datetime | None) -> float | None:
        return round((b - a).total_seconds() / 60, 2) if a and b else None

    return {
        "time_to_detect_min": minutes(incident.impact_started_at, incident.opened_at),
        "time_to_acknowledge_min": minutes(incident.opened_at, incident.acked_at),
        "time_to_recover_min": minutes(incident.opened_at, incident.mitigated_at or incident.resolved_at),
    }


def describe(session: Session, incident: Incident, *, full: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": incident.id,
        "title": incident.title,
        "adapter": incident.adapter,
        "severity": incident.severity,
        "state": incident.state,
        "source": incident.source,
        "commander": incident.commander,
        "opened_at": incident.opened_at,
        "opened_by": incident.opened_by,
        "impact_started_at": incident.impact_started_at,
        "acked_at": incident.acked_at,
        "mitigated_at": incident.mitigated_at,
        "resolved_at": incident.resolved_at,
        **metrics(incident),
        **{f: getattr(incident, f) for f in TEXT_FIELDS},
    }
    if full:
        session.flush()
        data["alerts"] = [
            {
                "id": a.id,
                "rule": a.rule_id,
                "state": a.state,
                "severity": a.severity,
                "labels": a.labels,
                "value": a.value,
                "summary": a.annotations.get("summary"),
                "run": (a.context or {}).get("run"),
                "fired_at": a.fired_at,
                "resolved_at": a.resolved_at,
            }
            for a in _alerts(session, incident)
        ]
        data["timeline"] = [
            {"ts": e.ts, "actor": e.actor, "kind": e.kind, "message": e.message, "details": e.details}
            for e in session.scalars(
                select(IncidentEvent)
                .where(IncidentEvent.incident_id == incident.id)
                .order_by(IncidentEvent.ts, IncidentEvent.id)
            )
        ]
        data["action_items"] = [
            {"id": i.id, "description": i.description, "owner": i.owner, "due_on": i.due_on, "status": i.status}
            for i in session.scalars(
                select(ActionItem).where(ActionItem.incident_id == incident.id).order_by(ActionItem.id)
            )
        ]
    return data


def show(db: Database, incident_id: int) -> dict[str, Any]:
    with db.session() as session:
        return describe(session, get(session, incident_id))


def list_incidents(db: Database, *, include_resolved: bool = False, adapter: str | None = None) -> list[dict[str, Any]]:
    with db.session() as session:
        query = select(Incident).order_by(Incident.id.desc())
        if not include_resolved:
            query = query.where(Incident.state != "resolved")
        if adapter:
            query = query.where(Incident.adapter == adapter)
        return [describe(session, i, full=False) for i in session.scalars(query)]
