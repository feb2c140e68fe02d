"""Bearer tokens on the server's routes (``lorawatch.access`` keeps them).

A request without a token, with an unknown, revoked or expired one, or with one that lacks the
route's scope gets 401 with ``WWW-Authenticate: Bearer``; the reason is not told apart (a
prober learns nothing). The token never reaches a log: only its name does, once checked."""

from __future__ import annotations

from fastapi import HTTPException, Request

from lorawatch import access


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if any."""
    header = request.headers.get("authorization", "")
    kind, _, value = header.partition(" ")
    return value.strip() if kind.lower() == "bearer" and value.strip() else None


def require(scope: str):
    """A FastAPI dependency: the checked token's name, or 401."""

    def dependency(request: Request) -> str:
        database = request.app.state.database
        with database.session() as session:
            record = access.check(session, bearer(request), scope)
            if record is None:
                raise HTTPException(
                    status_code=401,
                    detail=f"a bearer token with the {scope} scope is needed (lorawatch tokens create)",
                    headers={"WWW-Authenticate": f'Bearer realm="lorawatch", scope="{scope}"'},
                )
            return record.name

    return dependency
