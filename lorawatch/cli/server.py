"""``lorawatch server`` and ``lorawatch tokens``: the HTTP service for the on-call stack and
the bearer tokens it takes."""

from __future__ import annotations

import click

from lorawatch import access
from lorawatch.cli.context import AppContext, pass_app
from lorawatch.cli.output import emit, json_option, parse_duration_option, table


@click.command("server")
@click.option("--address", default=None, help="Address to bind (default [server] address, 127.0.0.1).")
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="Port (default [server] port, 8700).")
@pass_app
def server(app: AppContext, address, port) -> None:
    """Serve /metrics, OTLP/HTTP traces in (/v1/traces) and the read-only API (/api/v1).

    Runs in the foreground until stopped (SIGTERM or Ctrl-C); /healthz and /readyz answer
    probes. The API and the OTLP route take bearer tokens (`lorawatch tokens create`)."""
    # Deferred: the ASGI stack loads only for this command.
    import uvicorn

    # Deferred: the ASGI stack loads only for this command.
    from lorawatch.server.app import create_app

    settings = app.settings
    address = address or settings.server.address
    port = port or settings.server.port
    click.echo(f"LoraWatch server: http://{address}:{port}  (/metrics, /v1/traces, /api/v1; Ctrl-C stops it)", err=True)
    uvicorn.run(create_app(settings, app.database), host=address, port=port, log_level="info", server_header=False)


@click.group()
def tokens() -> None:
    """Bearer tokens of lorawatch server: create, list, revoke."""


@tokens.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(list(access.SCOPES)),
    required=True,
    help="read: the API; ingest: OTLP traces in; metrics: /metrics when [server] metrics_token is on.",
)
@click.option("--expires", default=None, help="Refuse the token after this long (e.g. 90d); default never.")
@json_option
@pass_app
def create(app: AppContext, name, scopes, expires, as_json) -> None:
    """Make a token and print it, once: only its sha256 is kept."""
    expires_in = parse_duration_option(expires) if expires else None
    with app.database.session() as session:
        record, token = access.create(session, name=name, scopes=list(scopes), actor=app.actor, expires_in=expires_in)
        granted = list(record.scopes)
        shown = {"name": record.name, "scopes": granted, "expires_at": record.expires_at, "token": token}
    emit(
        shown,
        as_json,
        f"{token}\n(token {name}, scopes {', '.join(granted)}: shown this once; "
        "send it as 'Authorization: Bearer TOKEN')",
    )


@tokens.command("list")
@json_option
@pass_app
def list_(app: AppContext, as_json) -> None:
    """Every token's name, scopes, state and last use (never the token)."""
    with app.database.session() as session:
        rows = access.listing(session)
    emit(rows, as_json, lambda: table(rows) if rows else "(no tokens)")


@tokens.command("revoke")
@click.argument("name")
@json_option
@pass_app
def revoke(app: AppContext, name, as_json) -> None:
    """Refuse the token from now on."""
    with app.database.session() as session:
        record = access.revoke(session, name=name, actor=app.actor)
        shown = {"name": record.name, "revoked_at": record.revoked_at, "revoked_by": record.revoked_by}
    emit(shown, as_json, f"token {name} revoked")
