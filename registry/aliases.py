"""Aliases (production, canary, shadow, per tenant): promotion, rollback, resolution, history.

Every function takes an open session and leaves committing to the caller (docs/architecture.md),
so a command that fails half-way writes nothing: no rows, no audit entry, and no files in the
store (a registration's copied files are removed when its transaction rolls back).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorawatch import audit
from lorawatch.db.models import AdapterAlias, AdapterVersion, AliasEvent
from lorawatch.db.types import utcnow
from lorawatch.errors import ConflictError, NotFoundError, did_you_mean
from lorawatch.registry import files
from lorawatch.registry.store import DEFAULT_TENANT, ROUTE_ALIASES
from lorawatch.registry.versions import get_adapter, get_version


def check_alias(alias: str) -> str:
    """Aliases are route names (production, canary, shadow) or names of the same shape."""
    return files.check_name(alias, "alias")


def promote(
    session: Session,
    *,
    adapter: str,
    version: str,
    alias: str = "production",
    tenant: str = DEFAULT_TENANT,
    actor: str,
    reason: str | None = None,
    at: datetime | None = None,
) -> AliasEvent:
    """Point ``alias`` (for ``tenant``) at ``version``, recording who, when and why."""
    check_alias(alias)
    if tenant:
        files.check_name(tenant, "tenant")
    row = get_version(session, adapter, version)
    if row.state == "archived":
        raise ConflictError(f"{adapter}@{version} is archived", fix="restore it before promoting it")
    return _move_alias(session, row.adapter, alias, tenant, row, "promote", actor, reason, at)


def rollback(
    session: Session,
    *,
    adapter: str,
    alias: str = "production",
    tenant: str = DEFAULT_TENANT,
    actor: str,
    reason: str | None = None,
    at: datetime | None = None,
) -> AliasEvent:
    """Point ``alias`` back at the version it held before the current one was promoted."""
    record = get_adapter(session, adapter)
    stack = _alias_stack(session, record.id, alias, tenant)
    if not stack:
        raise NotFoundError(
            f'adapter "{adapter}" has no alias "{alias}"' + (f" for tenant {tenant}" if tenant else ""),
            fix="check `lorawatch registry show " + adapter + "`",
        )
    if len(stack) < 2:
        raise ConflictError(
            f'alias "{alias}" of {adapter} has no earlier version to roll back to',
            fix="promote the version you want instead",
        )
    target = session.get(AdapterVersion, stack[-2])
    assert target is not None  # the alias history's foreign key
    if target.state == "archived":
        raise ConflictError(f"{adapter}@{target.version} is archived", fix="restore it first")
    return _move_alias(session, record, alias, tenant, target, "rollback", actor, reason, at)


def _alias_stack(session: Session, adapter_id: int, alias: str, tenant: str) -> list[int]:
    """Replay the alias's history: a promotion pushes a version, a rollback pops one."""
    stack: list[int] = []
    for ev in session.scalars(
        select(AliasEvent)
        .where(AliasEvent.adapter_id == adapter_id, AliasEvent.alias == alias, AliasEvent.tenant == tenant)
        .order_by(AliasEvent.ts, AliasEvent.id)
    ):
        if ev.action == "rollback" and stack:
            stack.pop()
        else:
            stack.append(ev.to_version_id)
    return stack


def _move_alias(session, record, alias, tenant, target, action, actor, reason, at) -> AliasEvent:
    now = at or utcnow()
    current = session.scalar(
        select(AdapterAlias).where(
            AdapterAlias.adapter_id == record.id, AdapterAlias.alias == alias, AdapterAlias.tenant == tenant
        )
    )
    previous_id = current.version_id if current else None
    if previous_id == target.id and action == "promote":
        raise ConflictError(
            f'alias "{alias}" of {record.name} already points at {target.version}',
            fix="promote a different version",
        )
    if current is None:
        current = AdapterAlias(adapter_id=record.id, alias=alias, tenant=tenant, version_id=target.id, updated_at=now)
        session.add(current)
    else:
        current.version_id = target.id
        current.updated_at = now
    ev = AliasEvent(
        adapter_id=record.id,
        alias=alias,
        tenant=tenant,
        action=action,
        from_version_id=previous_id,
        to_version_id=target.id,
        ts=now,
        actor=actor,
        reason=reason,
    )
    session.add(ev)
    target.last_used_at = now
    if previous_id is not None:
        session.get(AdapterVersion, previous_id).last_used_at = now
    session.flush()
    previous = session.get(AdapterVersion, previous_id).version if previous_id else None
    audit.record(
        session,
        actor=actor,
        action=f"alias.{action}",
        object_type="adapter",
        object_id=record.name,
        reason=reason,
        ts=now,
        details={"alias": alias, "tenant": tenant, "from": previous, "to": target.version},
    )
    return ev


def aliased_versions(
    session: Session, alias: str = "production", tenant: str | None = DEFAULT_TENANT
) -> list[AdapterVersion]:
    """Every version ``alias`` points at now, in adapter order: the route's default
    (``tenant`` empty), one tenant's own aliases, or (``tenant=None``) every tenant's."""
    query = select(AdapterVersion).join(AdapterAlias, AdapterAlias.version_id == AdapterVersion.id)
    query = query.where(AdapterAlias.alias == alias)
    if tenant is not None:
        query = query.where(AdapterAlias.tenant == tenant)
    return list(session.scalars(query.order_by(AdapterVersion.adapter_id, AdapterVersion.id)))


def resolve_alias(
    session: Session, adapter: str, alias: str = "production", tenant: str = DEFAULT_TENANT, at: datetime | None = None
) -> AdapterVersion | None:
    """The version ``alias`` served to ``tenant`` at time ``at`` (now when not given).

    A tenant without an alias of its own follows the route's default. An alias name this
    adapter never had (and that is not a route alias) raises NotFoundError with the closest name.
    """
    record = get_adapter(session, adapter)
    known = set(ROUTE_ALIASES) | set(
        session.scalars(select(AliasEvent.alias).where(AliasEvent.adapter_id == record.id).distinct())
    )
    if alias not in known:
        raise NotFoundError(
            f'adapter "{adapter}" has no alias "{alias}"' + did_you_mean(alias, sorted(known)),
            fix="use one of its aliases (lorawatch registry show NAME)",
        )
    for who in [tenant, DEFAULT_TENANT] if tenant else [DEFAULT_TENANT]:
        if at is None:
            current = session.scalar(
                select(AdapterAlias).where(
                    AdapterAlias.adapter_id == record.id, AdapterAlias.alias == alias, AdapterAlias.tenant == who
                )
            )
            if current is not None:
                return session.get(AdapterVersion, current.version_id)
            continue
        ev = session.scalar(
            select(AliasEvent)
            .where(
                AliasEvent.adapter_id == record.id,
                AliasEvent.alias == alias,
                AliasEvent.tenant == who,
                AliasEvent.ts <= at,
            )
            .order_by(AliasEvent.ts.desc(), AliasEvent.id.desc())
            .limit(1)
        )
        if ev is not None:
            return session.get(AdapterVersion, ev.to_version_id)
    return None


def alias_history(
    session: Session, adapter: str, alias: str | None = None, tenant: str | None = None
) -> list[dict[str, Any]]:
    """Every promotion and rollback of the adapter's aliases, oldest first."""
    record = get_adapter(session, adapter)
    query = select(AliasEvent).where(AliasEvent.adapter_id == record.id).order_by(AliasEvent.ts, AliasEvent.id)
    if alias:
        query = query.where(AliasEvent.alias == alias)
    if tenant is not None:
        query = query.where(AliasEvent.tenant == tenant)
    versions = {v.id: v.version for v in record.versions}
    return [
        {
            "ts": ev.ts,
            "alias": ev.alias,
            "tenant": ev.tenant or None,
            "action": ev.action,
            "from_version": versions.get(ev.from_version_id) if ev.from_version_id is not None else None,
            "to_version": versions[ev.to_version_id],
            "actor": ev.actor,
            "reason": ev.reason,
        }
        for ev in session.scalars(query)
    ]


def aliases_of(session: Session, version: AdapterVersion) -> list[dict[str, str | None]]:
    """The aliases that point at a version now."""
    rows = session.scalars(
        select(AdapterAlias).where(AdapterAlias.version_id == version.id).order_by(AdapterAlias.alias)
    )
    return [{"alias": a.alias, "tenant": a.tenant or None} for a in rows]
