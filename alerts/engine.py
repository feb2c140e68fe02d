"""Rule evaluation, alert states and acknowledgements (silences: ``lorawatch.alerts.silences``).

States follow Prometheus: a series whose condition holds makes its alert *pending*; after
``for`` it is *firing*; when the condition stops holding (or the series disappears) a pending
alert goes back to *inactive* and a firing one *resolves*, unless ``keep_firing_for`` keeps it
firing that long after the first evaluation at which the condition failed. An alert is
identified by the fingerprint of its labels (the rule's id as ``alertname``, ``severity``, the
rule's labels and the series' labels).

A rule that cannot be evaluated (its series cannot be read, or an annotation template raises)
fails alone: its alerts keep their states (with a plain summary when only the template failed),
every other rule is evaluated as usual, and a ``rule_evaluation_failed`` alert names the rule
and the error until it evaluates again.

Evaluation is idempotent: evaluating again at the same time changes nothing, and an evaluation
time older than an alert's last one leaves that alert alone. Each evaluation stores the alerts'
states and the notifications they cause in one transaction (see ``lorawatch.alerts.dispatch``);
the hooks registered in ``lorawatch.alerts.hooks`` (incidents opening) run in it too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorawatch import audit
from lorawatch.alerts import hooks
from lorawatch.alerts.dispatch import dispatch as run_dispatch
from lorawatch.alerts.dispatch import inhibited_fingerprints, muted_fingerprints
from lorawatch.alerts.matchers import matches_all
from lorawatch.alerts.rules import Rule, load_rules, runbook_url
from lorawatch.alerts.silences import active_silences
from lorawatch.alerts.sources import Sample, SeriesReader
from lorawatch.db import Database
from lorawatch.db.models import AdapterRecord, Alert, AlertEvent
from lorawatch.db.types import utcnow
from lorawatch.errors import ConflictError, NotFoundError
from lorawatch.secrets import scrub
from lorawatch.settings import Settings

log = logging.getLogger(__name__)

OPEN_STATES = ("pending", "firing")
RULE_FAILED = "rule_evaluation_failed"


def fingerprint(labels: dict[str, str]) -> str:
    """A stable 16-hex-digit id of a label set."""
    text = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def alert_labels(rule: Rule, sample: Sample) -> dict[str, str]:
    """The labels of the alert a rule raises for one series."""
    return {**sample.labels, **rule.labels, "alertname": rule.id, "severity": rule.severity}


def evaluate(
    db: Database,
    settings: Settings,
    *,
    now: datetime | None = None,
    rules: list[Rule] | None = None,
    dispatch: bool = True,
) -> dict[str, Any]:
    """Evaluate every rule at ``now`` (default: the current time), store states and notifications.

    Rules read stored monitor results only; the scheduler's alerts job (and ``alerts evaluate``)
    computes the traffic monitors first (``monitors.traffic_eval.evaluate_traffic``) so their rules
    see fresh values. Returns the transitions and the alerts now open.
    """
    now = now or utcnow()
    rules = load_rules(settings) if rules is None else rules
    transitions: list[dict[str, Any]] = []
    with db.session() as session:
        reader = SeriesReader(session, settings, now)
        existing = {a.fingerprint: a for a in session.scalars(select(Alert))}
        seen: set[str] = set()
        series = 0
        errors: dict[str, str] = {}
        unread: set[str] = set()  # rules whose series could not be read: their alerts stay as they are
        for rule in rules:
            try:
                with session.begin_nested():  # a failing query must not abort the evaluation's transaction
                    samples = reader.samples(rule)
            except Exception as exc:
                errors[rule.id] = _error_text(exc)
                unread.add(rule.id)
                log.warning("rule %s could not be evaluated: %s", rule.id, errors[rule.id])
                continue
            for sample in samples:
                series += 1
                labels = alert_labels(rule, sample)
                fp = fingerprint(labels)
                seen.add(fp)
                holds = rule.holds(sample.value, sample.breached)
                threshold = sample.threshold if rule.threshold is None else rule.threshold
                if fp not in existing and not holds:
                    continue
                alert = _alert_at(session, existing, fp, rule, labels, now)
                if alert is None:
                    continue
                context = {"labels": labels, "value": sample.value, "threshold": threshold, "context": sample.context}
                alert.value, alert.threshold, alert.context = sample.value, threshold, _jsonable(sample.context)
                alert.runbook_url = rule.runbook_url
                try:
                    alert.annotations = rule.render_annotations(context)
                except Exception as exc:
                    errors.setdefault(rule.id, _error_text(exc))
                    alert.annotations = _plain_annotations(rule, labels, sample.value, threshold)
                _step(session, alert, rule, holds, now, transitions)
        _rule_errors(session, settings, errors, existing, seen, now, transitions)
        by_id = {r.id: r for r in rules}
        for fp, alert in existing.items():
            if fp in seen or alert.state not in OPEN_STATES or alert.last_eval_at > now:
                continue
            if alert.rule_id in unread:
                continue
            _step(session, alert, by_id.get(alert.rule_id), False, now, transitions)
        session.flush()
        open_alerts = [a for a in existing.values() if a.state in OPEN_STATES]
        muted = muted_fingerprints(session, settings, open_alerts, now)
        reactions = hooks.run_after_evaluation(session, settings, now, transitions, muted)
        notifications = run_dispatch(session, settings, now, muted=muted) if dispatch else []
        result = {
            "evaluated_at": now,
            "rules": len(rules),
            "series": series,
            "transitions": transitions,
            "firing": sum(a.state == "firing" for a in open_alerts),
            "pending": sum(a.state == "pending" for a in open_alerts),
            "notifications_queued": len(notifications),
            "incidents_opened": [],
            **reactions,
        }
    return result


def _alert_at(
    session: Session, existing: dict[str, Alert], fp: str, rule: Rule, labels: dict[str, str], now: datetime
) -> Alert | None:
    """The alert of ``fp`` (created inactive when new), or None when it was last evaluated
    after ``now`` (an older evaluation leaves it alone)."""
    alert = existing.get(fp)
    if alert is None:
        alert = Alert(
            fingerprint=fp,
            rule_id=rule.id,
            labels=labels,
            annotations={},
            severity=rule.severity,
            state="inactive",
            last_eval_at=now,
        )
        session.add(alert)
        existing[fp] = alert
    elif alert.last_eval_at > now:
        return None
    return alert


def _error_text(exc: Exception) -> str:
    return scrub(" ".join(f"{type(exc).__name__}: {exc}".split()))[:500]


def _plain_annotations(
    rule: Rule, labels: dict[str, str], value: float | None, threshold: float | None
) -> dict[str, str]:
    """What an alert says when its rule's templates fail: the facts, without the template."""
    where = " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity"))
    shown = "-" if value is None else f"{value:.4g}"
    limit = "" if threshold is None else f" (threshold {threshold:.4g})"
    return {"summary": f"{rule.id} {where}: value {shown}{limit}; the rule's annotation template failed to render"}


def _rule_errors(
    session: Session,
    settings: Settings,
    errors: dict[str, str],
    existing: dict[str, Alert],
    seen: set[str],
    now: datetime,
    transitions: list[dict[str, Any]],
) -> None:
    """Raise one ``rule_evaluation_failed`` alert per rule that failed in this evaluation
    (resolved, like any alert, when the rule evaluates again)."""
    rule = Rule(
        id=RULE_FAILED,
        monitor=None,
        metric=None,
        selector=[],
        op=None,
        threshold=None,
        for_=timedelta(0),
        keep_firing_for=timedelta(0),
        severity="warning",
        labels={"category": "alerting"},
        annotations={},
        runbook_url=runbook_url(RULE_FAILED, settings.alerts.runbook_base_url, settings.alerts.dashboard_url),
        lookback=timedelta(0),
        versions="all",
        source="built in",
    )
    for rule_id, error in sorted(errors.items()):
        labels = {"alertname": RULE_FAILED, "severity": "warning", "category": "alerting", "rule": rule_id}
        fp = fingerprint(labels)
        seen.add(fp)
        alert = _alert_at(session, existing, fp, rule, labels, now)
        if alert is None:
            continue
        alert.value, alert.threshold, alert.context = 1.0, None, {"error": error}
        alert.runbook_url = rule.runbook_url
        alert.annotations = {
            "summary": f"Alert rule {rule_id} failed to evaluate: {error}",
            "description": "Every other rule was evaluated as usual. Check the rule with "
            "`lorawatch alerts rules --check FILE` and fix its template or selector.",
        }
        _step(session, alert, rule, True, now, transitions)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _step(
    session: Session, alert: Alert, rule: Rule | None, holds: bool, now: datetime, transitions: list[dict[str, Any]]
) -> None:
    """Advance one alert's state machine to ``now``."""
    before = alert.state
    if holds:
        alert.last_true_at, alert.keep_firing_since = now, None
        if alert.state in ("inactive", "resolved"):
            alert.state, alert.active_at, alert.fired_at, alert.resolved_at = "pending", now, None, None
            alert.acked_by = alert.acked_at = alert.ack_comment = None
        if alert.state == "pending" and rule is not None and now - alert.active_at >= rule.for_:
            alert.state, alert.fired_at = "firing", now
    else:
        if alert.state == "pending":
            alert.state = "inactive"
        elif alert.state == "firing":
            keep = rule.keep_firing_for if rule is not None else timedelta(0)
            alert.keep_firing_since = alert.keep_firing_since or now
            if now - alert.keep_firing_since >= keep:
                alert.state, alert.resolved_at, alert.keep_firing_since = "resolved", now, None
    alert.last_eval_at = now
    if alert.state != before:
        if alert.id is None:
            session.flush()
        session.add(AlertEvent(alert_id=alert.id, ts=now, from_state=before, to_state=alert.state, value=alert.value))
        transitions.append(
            {
                "alert": alert.id,
                "fingerprint": alert.fingerprint,
                "rule": alert.rule_id,
                "labels": alert.labels,
                "from": before,
                "to": alert.state,
                "value": alert.value,
            }
        )


def describe(alert: Alert, *, silenced_by: list[int] | None = None, inhibited: bool = False) -> dict[str, Any]:
    """One alert as a plain dict (for ``--json`` and the dashboard)."""
    return {
        "id": alert.id,
        "fingerprint": alert.fingerprint,
        "rule": alert.rule_id,
        "state": alert.state,
        "severity": alert.severity,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "value": alert.value,
        "threshold": alert.threshold,
        "runbook_url": alert.runbook_url,
        "active_at": alert.active_at,
        "fired_at": alert.fired_at,
        "resolved_at": alert.resolved_at,
        "acked_by": alert.acked_by,
        "acked_at": alert.acked_at,
        "ack_comment": alert.ack_comment,
        "silenced_by": silenced_by or [],
        "inhibited": inhibited,
        "context": alert.context,
    }


def known_adapters(db: Database) -> list[str]:
    """Adapter names LoraWatch knows: registered ones and those alerts were raised for."""
    with db.session() as session:
        names = set(session.scalars(select(AdapterRecord.name)))
        names |= {a.labels.get("adapter") for a in session.scalars(select(Alert)) if a.labels.get("adapter")}
    return sorted(names)


def list_alerts(
    db: Database, settings: Settings, *, state: str = "open", adapter: str | None = None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Alerts by state: open (pending and firing), firing, pending, resolved, silenced or all."""
    now = now or utcnow()
    with db.session() as session:
        alerts = list(session.scalars(select(Alert).order_by(Alert.id)))
        silences = active_silences(session, now)
        inhibited = inhibited_fingerprints(alerts, settings)
        out = []
        for alert in alerts:
            if adapter and alert.labels.get("adapter") != adapter:
                continue
            by = [s.id for s, matchers in silences if matches_all(matchers, alert.labels)]
            muted = bool(by) or alert.fingerprint in inhibited
            keep = {
                "open": alert.state in OPEN_STATES,
                "all": True,
                "silenced": alert.state in OPEN_STATES and muted,
            }.get(state, alert.state == state)
            if keep:
                out.append(describe(alert, silenced_by=by, inhibited=alert.fingerprint in inhibited))
    severity_order = {"critical": 0, "warning": 1, "info": 2}
    out.sort(
        key=lambda a: ({"firing": 0, "pending": 1}.get(a["state"], 2), severity_order.get(a["severity"], 3), a["id"])
    )
    return out


def find_alert(session: Session, ref: str) -> Alert:
    """An alert by id or fingerprint."""
    query = (
        select(Alert).where(Alert.id == int(ref)) if ref.isdigit() else select(Alert).where(Alert.fingerprint == ref)
    )
    alert = session.scalar(query)
    if alert is None:
        raise NotFoundError(f"alert {ref!r} does not exist", fix="see `lorawatch alerts list --state all`")
    return alert


def acknowledge(
    db: Database, ref: str, *, actor: str, comment: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Acknowledge an open alert: it stays open but is not repeated to receivers."""
    now = now or utcnow()
    with db.session() as session:
        alert = find_alert(session, ref)
        if alert.state not in OPEN_STATES:
            raise ConflictError(f"alert {alert.id} is {alert.state}; only pending or firing alerts can be acknowledged")
        alert.acked_by, alert.acked_at, alert.ack_comment = actor, now, comment
        session.add(
            AlertEvent(
                alert_id=alert.id, ts=now, from_state=alert.state, to_state=alert.state, actor=actor, value=alert.value
            )
        )
        audit.record(
            session,
            actor=actor,
            action="alert.ack",
            object_type="alert",
            object_id=str(alert.id),
            reason=comment,
            details={"fingerprint": alert.fingerprint, "labels": alert.labels},
            ts=now,
        )
        return describe(alert)
