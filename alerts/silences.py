"""Silences: mute the alerts whose labels match, for a while, with a comment saying why.

Muted alerts keep being evaluated and stay visible; only their notifications are held back
(``lorawatch.alerts.dispatch``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorawatch import audit
from lorawatch.alerts.matchers import Matcher, matches_all, parse_matchers
from lorawatch.db import Database
from lorawatch.db.models import Silence
from lorawatch.db.types import utcnow
from lorawatch.errors import ConflictError, InputError, NotFoundError


def active_silences(session: Session, now: datetime) -> list[tuple[Silence, list]]:
    """Silences in force at ``now`` with their parsed matchers."""
    rows = session.scalars(select(Silence).where(Silence.starts_at <= now, Silence.ends_at > now))
    return [(s, parse_matchers(s.matchers)) for s in rows]


def matchers_for(labels: dict[str, str]) -> list[str]:
    """The matchers that silence exactly this alert's series: every label but ``severity``
    (Alertmanager's "silence this alert"), alertname first."""
    names = ["alertname", *sorted(k for k in labels if k not in ("alertname", "severity"))]
    return [str(Matcher(name, "=", str(labels[name]))) for name in names if name in labels]


def silence_preview(matchers: list[str], alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Which of ``alerts`` (``list_alerts`` dicts) a silence with ``matchers`` would mute, before
    it is made. Raises InputError on a matcher that does not parse, as ``add_silence`` would."""
    parsed = parse_matchers(matchers)
    if not parsed:
        return []
    return [a for a in alerts if matches_all(parsed, a["labels"])]


def add_silence(
    db: Database,
    *,
    matchers: list[str],
    duration: timedelta | None = None,
    until: datetime | None = None,
    starts_at: datetime | None = None,
    comment: str,
    actor: str,
) -> dict[str, Any]:
    """Create a silence; matchers are validated first and nothing is stored when one is wrong."""
    parsed = parse_matchers(matchers)
    if not parsed:
        raise InputError("a silence needs at least one matcher", fix="add --matcher 'adapter=\"support-bot\"'")
    if not comment or not comment.strip():
        raise InputError("a silence needs a comment saying why", fix='add --comment "..."')
    start = starts_at or utcnow()
    end = until or (start + duration if duration else None)
    if end is None or end <= start:
        raise InputError("a silence must end after it starts", fix="give --duration 2h or --until a later time")
    with db.session() as session:
        silence = Silence(
            matchers=[str(m) for m in parsed], starts_at=start, ends_at=end, created_by=actor, comment=comment
        )
        session.add(silence)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="silence.create",
            object_type="silence",
            object_id=str(silence.id),
            reason=comment,
            details={"matchers": silence.matchers, "ends_at": end.isoformat()},
        )
        return _silence_dict(silence)


def expire_silence(db: Database, silence_id: int, *, actor: str, now: datetime | None = None) -> dict[str, Any]:
    """End a silence now."""
    now = now or utcnow()
    with db.session() as session:
        silence = session.get(Silence, silence_id)
        if silence is None:
            raise NotFoundError(f"silence {silence_id} does not exist", fix="see `lorawatch alerts silences --all`")
        if silence.ends_at <= now:
            raise ConflictError(f"silence {silence_id} already ended at {silence.ends_at.isoformat()}")
        silence.ends_at = now
        audit.record(session, actor=actor, action="silence.expire", object_type="silence", object_id=str(silence_id))
        return _silence_dict(silence)


def list_silences(db: Database, *, include_expired: bool = False, now: datetime | None = None) -> list[dict[str, Any]]:
    """Silences in force (or all of them)."""
    now = now or utcnow()
    with db.session() as session:
        query = select(Silence).order_by(Silence.id)
        if not include_expired:
            query = query.where(Silence.ends_at > now)
        return [_silence_dict(s, now) for s in session.scalars(query)]


def _silence_dict(s: Silence, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    state = "active" if s.starts_at <= now < s.ends_at else ("pending" if now < s.starts_at else "expired")
    return {
        "id": s.id,
        "matchers": s.matchers,
        "starts_at": s.starts_at,
        "ends_at": s.ends_at,
        "state": state,
        "created_by": s.created_by,
        "comment": s.comment,
    }
