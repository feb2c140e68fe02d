"""Core commands: ``init``, ``config``, ``audit``."""

from __future__ import annotations

from pathlib import Path

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from lorawatch import audit as audit_log
from lorawatch import retention
from lorawatch.cli.canary import _summary_text
from lorawatch.cli.context import AppContext, pass_app
from lorawatch.cli.dashboard import serve
from lorawatch.cli.output import emit, json_option, table
from lorawatch.db import open_database
from lorawatch.demo.run import FULL_DATASET, run_demo
from lorawatch.errors import InputError
from lorawatch.settings import CONFIG_FILE_NAME, render_default_toml


@click.command()
@json_option
@pass_app
def init(app: AppContext, as_json: bool) -> None:
    """Create or upgrade the database and write a default lorawatch.toml if there is none.

    Safe to run any number of times: an up-to-date database and an existing settings file are
    left as they are.
    """

    settings = app.settings
    wrote_config = None
    if settings.source is None:
        target = Path.cwd() / CONFIG_FILE_NAME
        target.write_text(render_default_toml(), encoding="utf-8")
        wrote_config = str(target)
    database = open_database(settings)  # the home directory is created owner-only
    before = database.current_revision()
    database.upgrade()
    after = database.current_revision()
    database.dispose()
    result = {
        "database": database.safe_url,
        "revision_before": before,
        "revision": after,
        "upgraded": before != after,
        "home": str(settings.home_dir),
        "config": str(settings.source) if settings.source else wrote_config,
        "wrote_config": wrote_config is not None,
    }
    lines = [
        f"database  {result['database']}",
        f"schema    {after}" + (f" (upgraded from {before or 'empty'})" if before != after else " (up to date)"),
        f"home      {result['home']}",
    ]
    if wrote_config:
        lines.append(f"config    {wrote_config} (written with the defaults)")
    elif settings.source:
        lines.append(f"config    {settings.source}")
    emit(result, as_json, "\n".join(lines))


@click.group()
def config() -> None:
    """Show the settings in force."""


@config.command("show")
@json_option
@pass_app
def config_show(app: AppContext, as_json: bool) -> None:
    """Print the settings in force (secrets appear as references, never as values)."""
    settings = app.settings
    data = settings.model_dump(mode="json")
    data["source"] = str(settings.source) if settings.source else None
    data["database_url_in_force"] = _redacted(settings.database_url)
    if data.get("database", {}).get("url"):  # LORAWATCH_DATABASE_URL lands here, password and all
        data["database"]["url"] = _redacted(data["database"]["url"])
    emit(data, as_json)


@config.command("default")
def config_default() -> None:
    """Print a commented lorawatch.toml with every setting at its default."""

    click.echo(render_default_toml(), nl=False)


def _redacted(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL at all: say so rather than echo it (it may hold a secret)
        return "<not a database URL>"


@click.group()
def audit() -> None:
    """Read the audit log."""


@audit.command("list")
@click.option("--object", "object_ref", default=None, help="Only entries for TYPE or TYPE:ID.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@json_option
@pass_app
def audit_list(app: AppContext, object_ref: str | None, limit: int, as_json: bool) -> None:
    """The newest audit entries: who did what to which object, when and why."""

    object_type, _, object_id = (object_ref or "").partition(":")
    with app.database.session() as session:
        rows = [
            {
                "ts": e.ts,
                "actor": e.actor,
                "action": e.action,
                "object": f"{e.object_type}:{e.object_id}",
                "reason": e.reason,
                "details": e.details,
            }
            for e in audit_log.entries(
                session, object_type=object_type or None, object_id=object_id or None, limit=limit
            )
        ]
    emit(rows, as_json, lambda: table(rows, ["ts", "actor", "action", "object", "reason"]))


@click.command()
@click.option("--no-dashboard", is_flag=True, help="Do not serve the dashboard at the end.")
@click.option(
    "--dataset",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Canary dataset: a JSONL file or a shipped set (default: smoke-v1, 20 prompts).",
)
@click.option("--full", is_flag=True, help="The full 225-prompt core-v1 set instead of smoke-v1 (about 10x longer).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None, help="Generated tokens per prompt.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Prompts per batch.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@json_option
@pass_app
def demo(app: AppContext, no_dashboard, dataset, full, max_new_tokens, batch_size, device, as_json) -> None:
    """The embedded default end to end on SmolLM2-135M-Instruct.

    Prepares the model once, registers and promotes the three shipped demo adapters (healthy,
    drifted, risky), seeds traffic and KPI history and runs a canary round on the smoke set.
    Run it again for another round, compared with the first.
    """

    if full and dataset is not None:
        raise InputError("--full and --dataset both name the canary set", fix="pass one of them")
    settings = app.settings
    database = open_database(settings)
    say = (lambda _msg: None) if as_json else (lambda msg: click.echo(msg, err=True))

    summary = run_demo(
        database,
        settings,
        actor=app.actor,
        dataset=FULL_DATASET if full else dataset,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        device=device,
        progress=not as_json,
        say=say,
    )

    user = summary.pop("dashboard_user")  # its password is shown once, on the terminal, never in --json
    summary["dashboard_user"] = {"name": user["name"], "password": "shown only without --json"}

    def text() -> str:
        alerts = summary["alerts"]
        lines = [_summary_text(summary), "", f"alerts firing: {len(alerts['firing'])}"]
        lines += [f"  {a['severity']:<8} {a['rule']:<16} {a['summary']}" for a in alerts["firing"]]
        lines += [
            f"incident {i['id']} ({i['severity']}, {i['state']}) on {i['adapter']}: {i['title']}"
            for i in alerts["incidents"]
        ]
        n = alerts["notifications"]
        lines.append(f"notifications: {n['delivered']} delivered, {n['pending']} pending (see `lorawatch notify list`)")
        lines.append(
            f"dashboard responder: user {user['name']}, password {user['password']} "
            "(new each demo run; `lorawatch dashboard --add-user NAME` adds your own)"
        )
        return "\n".join(lines)

    emit(summary, as_json, text)
    if not no_dashboard:
        raise SystemExit(serve(settings, say=lambda m: click.echo(m, err=True)))


@click.command("purge")
@click.option("--dry-run", is_flag=True, help="Count what would go, change nothing.")
@json_option
@pass_app
def purge(app: AppContext, dry_run: bool, as_json: bool) -> None:
    """Apply [retention]: erase old canary outputs, drop old traffic, notifications, alerts, runs."""
    result = retention.purge(app.database, app.settings, dry_run=dry_run, actor=app.actor)
    counts = result["would_purge" if dry_run else "purged"]
    verb = "would purge" if dry_run else "purged"
    emit(result, as_json, f"{verb}: " + ", ".join(f"{kind} {n}" for kind, n in counts.items()))
