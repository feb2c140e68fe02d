"""Bearer tokens of ``lorawatch server``: created, listed and revoked by ``lorawatch tokens``,
checked by the server on every request.

A token is ``lw_`` followed by 43 random URL-safe characters (256 bits). Only its sha256 is
stored: the token is shown once, when it is made. Each token has scopes: ``read`` for the
JSON API, ``ingest`` for OTLP traces in, ``metrics`` for ``/metrics`` when the server is told
to protect it. A revoked or expired token is refused like an unknown one.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lorawatch import audit
from lorawatch.db.models import ApiToken
from lorawatch.db.types import utcnow
from lorawatch.errors import ConflictError, InputError, NotFoundError

SCOPES = ("read", "ingest", "metrics")
PREFIX = "lw_"
# Presented tokens longer than this are refused before hashing (a header is no place for megabytes).
MAX_TOKEN_CHARS = 200


def digest(token: str) -> str:
    """The sha256 kept in place of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create(
    session: Session, *, name: str, scopes: list[str], actor: str, expires_in: timedelta | None = None
) -> tuple[ApiToken, str]:
    """A new token: its record and the token itself (shown once, never stored)."""
    if not name or len(name) > 128 or not all(c.isalnum() or c in "-_." for c in name):
        raise InputError(f"token name {name!r} is not valid", fix="use 1-128 letters, digits, '-', '_' or '.'")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InputError(
            f"scope(s) {', '.join(unknown) or '(none)'} not one of {', '.join(SCOPES)}",
            fix="pass --scope read, --scope ingest or --scope metrics (repeatable)",
        )
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise ConflictError(f'a token named "{name}" exists', fix="pick another name, or revoke that one first")
    token = PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(
        name=name,
        token_sha256=digest(token),
        scopes=sorted(set(scopes)),
        created_by=actor,
        expires_at=utcnow() + expires_in if expires_in else None,
    )
    session.add(record)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="token.create",
        object_type="api_token",
        object_id=name,
        details={"scopes": record.scopes, "expires_at": record.expires_at.isoformat() if record.expires_at else None},
    )
    return record, token


def revoke(session: Session, *, name: str, actor: str) -> ApiToken:
    """Refuse the token from now on (its record stays, for the audit)."""
    record = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if record is None:
        raise NotFoundError(f'no token named "{name}"', fix="list them with `lorawatch tokens list`")
    if record.revoked_at is None:
        record.revoked_at, record.revoked_by = utcnow(), actor
        audit.record(session, actor=actor, action="token.revoke", object_type="api_token", object_id=name)
    return record


def listing(session: Session) -> list[dict[str, Any]]:
    """Every token's record (never the token), newest first."""
    now = utcnow()
    rows = session.scalars(select(ApiToken).order_by(ApiToken.created_at.desc(), ApiToken.id.desc()))
    return [
        {
            "name": t.name,
            "scopes": list(t.scopes),
            "created_by": t.created_by,
            "created_at": t.created_at,
            "expires_at": t.expires_at,
            "last_used_at": t.last_used_at,
            "revoked_at": t.revoked_at,
            "state": _state(t, now),
        }
        for t in rows
    ]


def _state(token: ApiToken, now: datetime) -> str:
    if token.revoked_at is not None:
        return "revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return "expired"
    return "active"


def check(session: Session, presented: str | None, scope: str) -> ApiToken | None:
    """The token's record when ``presented`` is an active token with ``scope``, else None.

    ``last_used_at`` is updated at most once a minute per token (a busy ingest path would
    otherwise write on every request)."""
    if not presented or len(presented) > MAX_TOKEN_CHARS or not presented.startswith(PREFIX):
        return None
    record = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest(presented)))
    now = utcnow()
    if record is None or _state(record, now) != "active" or scope not in record.scopes:
        return None
    if record.last_used_at is None or now - record.last_used_at > timedelta(minutes=1):
        record.last_used_at = now
    return record
