"""Read-side views of the registry for `list`, `show`, the dashboard and reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorawatch.db.models import AdapterAlias, AdapterRecord, AdapterVersion, BaseModelRecord, GateVerdict
from lorawatch.db.types import utcnow
from lorawatch.registry import lifecycle
from lorawatch.registry.aliases import alias_history
from lorawatch.registry.versions import get_adapter


def latest_verdict(session: Session, version_id: int) -> dict[str, Any] | None:
    """The newest promotion-gate verdict of a version (None when never gated)."""
    row = session.scalar(
        select(GateVerdict)
        .where(GateVerdict.adapter_version_id == version_id)
        .order_by(GateVerdict.ts.desc(), GateVerdict.id.desc())
        .limit(1)
    )
    if row is None:
        return None
    return {
        "passed": row.passed,
        "run": row.run_id,
        "ts": row.ts,
        "actor": row.actor,
        "compared_with": row.compared_with,
        "failed": [c["check"] for c in row.checks if not c["passed"]],
    }


def version_view(session: Session, row: AdapterVersion, now: datetime, review_days: int) -> dict[str, Any]:
    """Everything about one version, as plain data."""
    aliases = session.scalars(
        select(AdapterAlias).where(AdapterAlias.version_id == row.id).order_by(AdapterAlias.alias)
    )
    return {
        "adapter": row.adapter.name,
        "version": row.version,
        "base": row.adapter.base_model.name,
        "state": row.state,
        "rank": row.rank,
        "alpha": row.alpha,
        "target_modules": row.target_modules,
        "base_model_name_or_path": row.base_model_name_or_path,
        "content_sha256": row.content_sha256,
        "files": row.files,
        "storage": row.storage,
        "path": row.path,
        "created_at": row.created_at,
        "created_by": row.created_by,
        "last_used_at": row.last_used_at,
        "aliases": [{"alias": a.alias, "tenant": a.tenant or None} for a in aliases],
        "lineage": row.lineage,
        "performance": row.performance,
        "risk": row.risk,
        "ownership": row.ownership,
        **lifecycle.status(row, now, review_days),
        "gate": latest_verdict(session, row.id),
    }


def list_versions(
    session: Session,
    *,
    review_days: int,
    adapter: str | None = None,
    base: str | None = None,
    team: str | None = None,
    alias: str | None = None,
    state: str | None = None,
    expired: bool = False,
    review_overdue: bool = False,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Versions matching every given filter, as views."""
    now = now or utcnow()
    query = (
        select(AdapterVersion)
        .join(AdapterRecord, AdapterVersion.adapter_id == AdapterRecord.id)
        .join(BaseModelRecord, AdapterRecord.base_model_id == BaseModelRecord.id)
        .order_by(AdapterRecord.name, AdapterVersion.id)
    )
    if adapter:
        query = query.where(AdapterRecord.name == adapter)
    if base:
        query = query.where(BaseModelRecord.name == base)
    if team:
        query = query.where(AdapterVersion.owner_team == team)
    if state:
        query = query.where(AdapterVersion.state == state)
    if alias:
        query = query.where(AdapterVersion.id.in_(select(AdapterAlias.version_id).where(AdapterAlias.alias == alias)))
    views = [version_view(session, row, now, review_days) for row in session.scalars(query)]
    if expired:
        views = [v for v in views if v["expired"]]
    if review_overdue:
        views = [v for v in views if v["review_overdue"]]
    return views


def adapter_view(session: Session, name: str, review_days: int, now: datetime | None = None) -> dict[str, Any]:
    """An adapter with its versions, aliases and alias history."""
    now = now or utcnow()
    record = get_adapter(session, name)
    return {
        "adapter": record.name,
        "base": record.base_model.name,
        "created_at": record.created_at,
        "created_by": record.created_by,
        "versions": [version_view(session, v, now, review_days) for v in record.versions],
        "history": alias_history(session, name),
    }
