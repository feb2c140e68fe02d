"""The audit log: every state-changing action records who, what, which object, when, why."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorawatch.db.models import AuditLog
from lorawatch.db.types import utcnow
from lorawatch.secrets import scrub, scrub_data


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    ts: datetime | None = None,
) -> AuditLog:
    """Add an audit entry to the caller's transaction (it lands only if that commits)."""
    entry = AuditLog(
        ts=ts or utcnow(),
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        reason=scrub(reason) if reason else reason,
        details=scrub_data(details) if details is not None else None,
    )
    session.add(entry)
    return entry


def entries(
    session: Session,
    *,
    object_type: str | None = None,
    object_id: str | None = None,
    limit: int = 100,
) -> list[AuditLog]:
    """The newest audit entries, optionally for one object."""
    query = select(AuditLog).order_by(AuditLog.ts.desc(), AuditLog.id.desc()).limit(limit)
    if object_type:
        query = query.where(AuditLog.object_type == object_type)
    if object_id:
        query = query.where(AuditLog.object_id == object_id)
    return list(session.scalars(query))
