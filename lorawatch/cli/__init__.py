"""The ``lorawatch`` command line.

Thin by design: each command parses its options, calls one service function and prints the
result (``--json`` for one JSON document). Errors the user can fix exit with status 2 and one
line on stderr; anything else is a bug and exits with status 1 and a traceback. Only click is
imported at start-up; each command imports what it needs when it runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lorawatch import __version__
from lorawatch.cli.alerts import alert_commands
from lorawatch.cli.canary import canary, gate
from lorawatch.cli.context import AppContext
from lorawatch.cli.core import core_commands
from lorawatch.cli.dashboard import dashboard_commands
from lorawatch.cli.incidents import incident_commands
from lorawatch.cli.jobs import job_commands
from lorawatch.cli.registry import registry
from lorawatch.cli.risk import risk
from lorawatch.cli.traffic import traffic_commands


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
    ctx.obj = AppContext(config_path)


for command in [
    *core_commands,
    registry,
    canary,
    gate,
    risk,
    *traffic_commands,
    *alert_commands,
    *job_commands,
    *incident_commands,
    *dashboard_commands,
]:
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lorawatch`` console script."""
    from lorawatch.errors import LoraWatchError

    try:
        result = cli.main(args=argv, prog_name="lorawatch", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("lorawatch: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LoraWatchError as exc:
        click.echo(f"lorawatch: error: {exc.one_line()}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("lorawatch: interrupted", err=True)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
