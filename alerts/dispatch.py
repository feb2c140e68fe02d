"""From alert states to queued notifications: routing, inhibition, silences and grouping.

Alertmanager's semantics: the routing tree sends each alert to the receivers of the routes it
matches; alerts of one receiver that share the route's ``group_by`` labels form a group, which
is notified ``group_wait`` after it appears, then at most every ``group_interval`` when it
changes (an alert fires or resolves), and every ``repeat_interval`` when it does not. Silenced
and inhibited alerts are not notified; acknowledged ones are not repeated (Alertmanager
receivers excepted: they expire alerts that are not re-sent). Notifications are written to the
outbox in the caller's transaction, together with the group's new state, so a crash can never
lose one or send one twice from the same state.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lorawatch.alerts.matchers import Matcher, matches_all, parse_matchers
from lorawatch.alerts.silences import active_silences
from lorawatch.db.models import Alert, Incident, IncidentAlert, Notification, NotificationGroup
from lorawatch.intervals import Entry, holds
from lorawatch.settings import Settings

ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass
class Route:
    """A resolved node of the routing tree (inherited values filled in)."""

    receiver: str
    matchers: list[Matcher]
    group_by: list[str]
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta
    continue_: bool
    routes: list[Route]
    path: str
    mute_intervals: list[list[Entry]] = field(default_factory=list)
    active_intervals: list[list[Entry]] = field(default_factory=list)

    def muted_at(self, at: datetime) -> bool:
        """Whether the route sends nothing at ``at``: inside a mute interval, or outside all of
        its active intervals when it has any."""
        if any(holds(interval, at) for interval in self.mute_intervals):
            return True
        return bool(self.active_intervals) and not any(holds(interval, at) for interval in self.active_intervals)


def build_routes(settings: Settings) -> Route:
    """The routing tree with every node's inherited values resolved (time intervals are not
    inherited, as in Alertmanager)."""
    named = {name: [entry.entry() for entry in entries] for name, entries in settings.alerts.time_intervals.items()}

    def build(node, parent: Route | None, path: str) -> Route:
        route = Route(
            receiver=node.receiver or (parent.receiver if parent else "default"),
            matchers=parse_matchers(node.matchers),
            group_by=node.group_by if node.group_by is not None else (parent.group_by if parent else ["alertname"]),
            group_wait=node.group_wait
            if node.group_wait is not None
            else (parent.group_wait if parent else timedelta(seconds=30)),
            group_interval=node.group_interval
            if node.group_interval is not None
            else (parent.group_interval if parent else timedelta(minutes=5)),
            repeat_interval=node.repeat_interval
            if node.repeat_interval is not None
            else (parent.repeat_interval if parent else timedelta(hours=4)),
            continue_=node.continue_,
            routes=[],
            path=path,
            mute_intervals=[named[name] for name in node.mute_time_intervals],
            active_intervals=[named[name] for name in node.active_time_intervals],
        )
        route.routes = [build(child, route, f"{path}.{i}") for i, child in enumerate(node.routes)]
        return route

    root = build(settings.alerts.route, None, "root")
    # A failed notification is reported to the fallback receiver whatever the routes say, so a
    # broken receiver cannot swallow the news of its own failure.
    fallback = Route(
        receiver=settings.alerts.fallback_receiver,
        matchers=parse_matchers(['alertname="notification_failed"']),
        group_by=["alertname", "receiver"],
        group_wait=timedelta(0),
        group_interval=root.group_interval,
        repeat_interval=root.repeat_interval,
        continue_=False,
        routes=[],
        path="fallback",
    )
    root.routes.insert(0, fallback)
    return root


def match_routes(route: Route, labels: dict[str, str]) -> list[Route]:
    """The routes an alert goes to: the deepest matching ones, honouring ``continue``."""
    if not matches_all(route.matchers, labels):
        return []
    found: list[Route] = []
    for child in route.routes:
        hits = match_routes(child, labels)
        if hits:
            found += hits
            if not child.continue_:
                break
    return found or [route]


def inhibited_fingerprints(alerts: list[Alert], settings: Settings) -> set[str]:
    """Fingerprints of alerts muted by an inhibition rule (a firing source with equal labels)."""
    rules = [
        (parse_matchers(r.source_matchers), parse_matchers(r.target_matchers), r.equal)
        for r in settings.alerts.inhibit_rules
    ]
    firing = [a for a in alerts if a.state == "firing"]
    muted: set[str] = set()
    for source_m, target_m, equal in rules:
        sources = [a for a in firing if matches_all(source_m, a.labels)]
        if not sources:
            continue
        for target in alerts:
            if target.state not in ("pending", "firing") or not matches_all(target_m, target.labels):
                continue
            for source in sources:
                if source.fingerprint != target.fingerprint and all(
                    source.labels.get(k, "") == target.labels.get(k, "") for k in equal
                ):
                    muted.add(target.fingerprint)
                    break
    return muted


def muted_fingerprints(session: Session, settings: Settings, alerts: list[Alert], now: datetime) -> set[str]:
    """Fingerprints of the alerts a silence in force or an inhibition rule mutes at ``now``."""
    silences = active_silences(session, now)
    silenced = {a.fingerprint for a in alerts if any(matches_all(m, a.labels) for _, m in silences)}
    return silenced | inhibited_fingerprints(alerts, settings)


def group_key(route: Route, labels: dict[str, str]) -> tuple[str, dict[str, str]]:
    """The group an alert belongs to on a route: a hash of the route and the group_by labels."""
    if "..." in route.group_by:
        group_labels = dict(labels)
    else:
        group_labels = {k: labels[k] for k in route.group_by if k in labels}
    text = json.dumps([route.path, route.receiver, sorted(group_labels.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:32], group_labels


def dispatch(
    session: Session, settings: Settings, now: datetime, *, skip_group_wait: bool = False, muted: set[str] | None = None
) -> list[Notification]:
    """Queue the notifications due at ``now`` into the outbox (in the caller's transaction).

    ``skip_group_wait`` sends new groups at once (the demo, and ``notify flush --no-wait``);
    ``muted`` is what ``muted_fingerprints`` gives, when the caller has it already.
    """
    root = build_routes(settings)
    receivers = settings.alerts.all_receivers
    groups = {(g.receiver, g.group_key): g for g in session.scalars(select(NotificationGroup))}
    notified_fps = {fp for g in groups.values() for fp in (g.notified or {})}
    alerts = list(session.scalars(select(Alert).where(Alert.state.in_(("firing", "pending")))))
    if notified_fps:
        alerts += list(
            session.scalars(
                select(Alert).where(Alert.state.not_in(("firing", "pending")), Alert.fingerprint.in_(notified_fps))
            )
        )
    if muted is None:
        muted = muted_fingerprints(session, settings, alerts, now)
    members: dict[tuple[str, str], list[Alert]] = {}
    route_of: dict[tuple[str, str], Route] = {}
    for alert in alerts:
        if alert.state == "pending":
            continue
        for route in match_routes(root, alert.labels):
            key, labels = group_key(route, alert.labels)
            gk = (route.receiver, key)
            route_of[gk] = route
            members.setdefault(gk, []).append(alert)
            if gk not in groups and alert.state == "firing":
                group = NotificationGroup(
                    receiver=route.receiver, group_key=key, group_labels=labels, first_seen_at=now, notified={}
                )
                session.add(group)
                groups[gk] = group
    queued: list[Notification] = []
    for gk, group in list(groups.items()):
        # no alert of this group routed here any more (the routes changed): the root's timings
        route = route_of.get(gk) or root
        in_group = members.get(gk, [])
        firing = [a for a in in_group if a.state == "firing" and a.fingerprint not in muted]
        notified = dict(group.notified or {})
        by_fp = {a.fingerprint: a for a in in_group}
        to_resolve = [
            by_fp[fp] for fp, st in notified.items() if st == "firing" and fp in by_fp and by_fp[fp].state == "resolved"
        ]
        gone = [fp for fp, st in notified.items() if fp not in by_fp or by_fp[fp].state not in ("firing", "resolved")]
        receiver = receivers.get(gk[0])
        if receiver is None:
            continue
        if not receiver.send_resolved and (to_resolve or gone):
            for a in to_resolve:
                notified.pop(a.fingerprint, None)
            to_resolve = []
        for fp in gone:
            notified.pop(fp, None)
        if not firing and not to_resolve:
            if notified:
                if notified != (group.notified or {}):
                    group.notified = notified
            elif group.id is not None:  # an empty group ends; the next alert starts a new one (group_wait again)
                session.execute(update(Notification).where(Notification.group_id == group.id).values(group_id=None))
                session.delete(group)
            else:
                session.expunge(group)
            continue
        new_firing = [a for a in firing if notified.get(a.fingerprint) != "firing"]
        changed = bool(new_firing or to_resolve)
        if group.last_notified_at is None:
            due = skip_group_wait or now >= group.first_seen_at + route.group_wait
        elif changed:
            due = now >= group.last_notified_at + route.group_interval
        else:
            all_acked = all(a.acked_at is not None for a in firing) and receiver.type != "alertmanager"
            due = not all_acked and now >= group.last_notified_at + route.repeat_interval
        if not due or route.muted_at(now):  # a muted route holds it back; it goes out when the interval ends
            continue
        if group.id is None:
            session.flush()
        payload = build_payload(
            group, route, settings, firing, to_resolve, now, incidents=open_incidents(session, firing, settings)
        )
        note = Notification(
            receiver=gk[0], group_id=group.id, status="pending", payload=payload, created_at=now, next_attempt_at=now
        )
        session.add(note)
        queued.append(note)
        group.last_notified_at = now
        group.notified = {a.fingerprint: "firing" for a in firing}
    session.flush()
    return queued


def _iso(ts: datetime | None) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if ts else ZERO_TIME


def alert_payload(alert: Alert, settings: Settings, status: str) -> dict[str, Any]:
    """One alert in the Alertmanager webhook format (plus value, threshold and runbook)."""
    dashboard = settings.alerts.dashboard_url.rstrip("/")
    annotations = dict(alert.annotations or {})
    if alert.runbook_url:
        annotations["runbook_url"] = alert.runbook_url
    return {
        "status": status,
        "labels": alert.labels,
        "annotations": annotations,
        "startsAt": _iso(alert.fired_at or alert.active_at),
        "endsAt": _iso(alert.resolved_at) if status == "resolved" else ZERO_TIME,
        "generatorURL": f"{dashboard}/alerts?alert={alert.id}",
        "fingerprint": alert.fingerprint,
        "value": alert.value,
        "threshold": alert.threshold,
        "acknowledged": alert.acked_at is not None,
    }


def open_incidents(session: Session, alerts: list[Alert], settings: Settings) -> list[dict[str, Any]]:
    """The unresolved incidents these alerts belong to (an incident opened by the alert
    evaluation that fired them is one already), with a link to each on the dashboard."""
    ids = [a.id for a in alerts if a.id is not None]
    if not ids:
        return []
    dashboard = settings.alerts.dashboard_url.rstrip("/")
    rows = session.scalars(
        select(Incident)
        .join(IncidentAlert, IncidentAlert.incident_id == Incident.id)
        .where(IncidentAlert.alert_id.in_(ids), Incident.state != "resolved")
        .distinct()
        .order_by(Incident.id)
    )
    return [
        {"id": i.id, "title": i.title, "severity": i.severity, "url": f"{dashboard}/incidents?incident={i.id}"}
        for i in rows
    ]


def build_payload(
    group: NotificationGroup,
    route: Route,
    settings: Settings,
    firing: list[Alert],
    resolved: list[Alert],
    now: datetime,
    incidents: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The Alertmanager v4 webhook payload of one group notification (channels render from it);
    ``lorawatch.incidents`` lists the open incidents its firing alerts belong to."""
    items = [alert_payload(a, settings, "firing") for a in firing] + [
        alert_payload(a, settings, "resolved") for a in resolved
    ]
    common_labels = _common([i["labels"] for i in items])
    common_annotations = _common([{k: v for k, v in i["annotations"].items()} for i in items])
    return {
        "version": "4",
        "groupKey": f"{route.path}:{json.dumps(group.group_labels, sort_keys=True)}",
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": group.receiver,
        "groupLabels": group.group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": common_annotations,
        "externalURL": settings.alerts.dashboard_url,
        "alerts": items,
        "lorawatch": {
            "sentAt": _iso(now),
            "repeatIntervalSeconds": route.repeat_interval.total_seconds(),
            "incidents": incidents or [],
        },
    }


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    first = dicts[0]
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in dicts[1:])}
