"""The ``lorawatch`` command line.

Thin by design: each command parses its options, calls one service function and prints the
result (``--json`` for one JSON document). Errors the user can fix exit with status 2 and one
line on stderr; anything else is a bug and exits with status 1 and a traceback. Only click is
imported at start-up; a command group's module (and the services it imports at its top) loads
when that command runs.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import NoReturn

import click

from lorawatch import __version__
from lorawatch.errors import LoraWatchError
from lorawatch.secrets import install_log_scrubber, scrub

# Each command group is imported only when it runs, so ``lorawatch --help`` and a plain
# ``lorawatch notify flush`` do not load the whole product: name -> (module, attribute, summary).
# The summary is the command's first sentence (tests/test_cli.py holds the two equal).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "alerts": ("lorawatch.cli.alerts", "alerts", "Alert rules, alerts, acknowledgements and silences."),
    "audit": ("lorawatch.cli.core", "audit", "Read the audit log."),
    "canary": (
        "lorawatch.cli.canary",
        "canary",
        "Canary runs: logit and embedding drift of adapters against their base.",
    ),
    "config": ("lorawatch.cli.core", "config", "Show the settings in force."),
    "costs": (
        "lorawatch.cli.traffic",
        "costs",
        "Adapter hit rate (requests, tokens), GPU hours per adapter and tenant, daily roll-ups.",
    ),
    "dashboard": (
        "lorawatch.cli.dashboard",
        "dashboard",
        "Serve the Streamlit dashboard (headless; open the printed URL).",
    ),
    "demo": ("lorawatch.cli.core", "demo", "The embedded default end to end on SmolLM2-135M-Instruct."),
    "gate": (
        "lorawatch.cli.canary",
        "gate",
        "CI/CD promotion gate: exit 0 when the candidate passes, 3 when it fails.",
    ),
    "incident": (
        "lorawatch.cli.incidents",
        "incident",
        "Incidents: open, acknowledge, note, roll back (with approval), resolve, export the report.",
    ),
    "ingest": (
        "lorawatch.cli.traffic",
        "ingest",
        "Load serving logs and KPI tables (JSONL, CSV or Parquet; all or nothing; never twice).",
    ),
    "init": (
        "lorawatch.cli.core",
        "init",
        "Create or upgrade the database and write a default lorawatch.toml if there is none.",
    ),
    "jobs": ("lorawatch.cli.jobs", "jobs", "Scheduled jobs: their schedules, last runs and history; run one now."),
    "latency": (
        "lorawatch.cli.traffic",
        "latency",
        "P50, P95 and P99 latency (and TTFT) with counts per adapter, from merged sketches.",
    ),
    "notify": (
        "lorawatch.cli.notify",
        "notify",
        "The notification outbox: deliver it, and read the notification log.",
    ),
    "registry": (
        "lorawatch.cli.registry",
        "registry",
        "The adapter registry: versions, lineage, aliases, promotion, rollback, lifecycle.",
    ),
    "purge": (
        "lorawatch.cli.core",
        "purge",
        "Apply [retention]: erase old canary outputs, drop old traffic, notifications, alerts, runs.",
    ),
    "risk": ("lorawatch.cli.risk", "risk", "Content risk: toxicity and PII of outputs; reviewers' verdicts."),
    "scheduler": (
        "lorawatch.cli.jobs",
        "scheduler",
        "Run the scheduled jobs: the weekly canary, alert evaluation, outbox flushes, pulls, lifecycle.",
    ),
    "server": (
        "lorawatch.cli.server",
        "server",
        "Serve /metrics, OTLP/HTTP traces in (/v1/traces) and the read-only API (/api/v1).",
    ),
    "tokens": ("lorawatch.cli.server", "tokens", "Bearer tokens of lorawatch server: create, list, revoke."),
    "traffic": ("lorawatch.cli.traffic", "traffic", "Traffic monitors: latency SLO burn rates, P99, KPI drops."),
}


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 3, 1)].rsplit(" ", 1)[0]
    return cut + "..."


class _LazyGroup(click.Group):
    """The top-level group: lists commands from ``COMMANDS`` and imports one when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), (module, attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        with formatter.section("Commands"):
            formatter.write_dl([(name, _shorten(COMMANDS[name][2], limit)) for name in names])


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="lorawatch")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Settings file (default: $LORAWATCH_CONFIG, else ./lorawatch.toml).",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """LoraWatch: watch LoRA adapters in production.

    Canary drift, content risk, latency, KPIs and alerts per adapter, with rollback and
    post-incident reports. Every reporting command takes --json.
    """
    # Deferred: the context brings the settings (pydantic) and the database (SQLAlchemy), which
    # --help and --version never need.
    from lorawatch.cli.context import AppContext

    ctx.obj = AppContext(config_path)


def _database_error(exc: BaseException) -> bool:
    """An operational error of the database driver (connection lost, locked, disk full), told
    apart without importing SQLAlchemy here (--help stays light)."""
    return any(
        c.__name__ in ("OperationalError", "InterfaceError") and c.__module__.startswith("sqlalchemy")
        for c in type(exc).__mro__
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lorawatch`` console script.

    Every message it prints on failure passes the secret scrubber, tracebacks of bugs included,
    and so does every log line (``lorawatch.secrets``)."""
    install_log_scrubber()
    entry = argv is None  # the console script (or python -m lorawatch), not a caller in this process
    try:
        result = cli.main(args=argv, prog_name="lorawatch", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("lorawatch: aborted", err=True)
        leave(entry, 130)
    except click.ClickException as exc:
        exc.show()
        leave(entry, exc.exit_code)
    except LoraWatchError as exc:
        click.echo(f"lorawatch: error: {exc.one_line()}", err=True)
        leave(entry, 2)
    except KeyboardInterrupt:
        click.echo("lorawatch: interrupted", err=True)
        leave(entry, 130)
    except Exception as exc:
        if _database_error(exc):  # the database went away or refused mid-command: not a bug
            said = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            click.echo(
                f"lorawatch: error: the database failed: {scrub(said[0] if said else type(exc).__name__)[:300]}; "
                "fix: check that the database server runs and has space, then run the command again",
                err=True,
            )
            leave(entry, 2)
        # a bug: its traceback, scrubbed of secrets (exit status 1)
        click.echo(scrub(traceback.format_exc()).rstrip(), err=True)
        leave(entry, 1)
    leave(entry, result if isinstance(result, int) else 0)


def leave(entry: bool, code: int) -> NoReturn:
    """End the command with ``code``. As the process's entry point (``entry``), after a command
    that loaded the model libraries (torch, transformers, spaCy), tearing down the interpreter's
    modules one by one takes seconds (1.9 s on a 2-core machine) and writes nothing: the exit
    handlers run (they flush logs and stop process pools), the output is flushed, and the
    process ends. Called in a process that goes on (tests), any other command, or one with a
    thread still at work: ``SystemExit``, as usual."""
    working = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if not entry or "torch" not in sys.modules or working:
        sys.exit(code)
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)
