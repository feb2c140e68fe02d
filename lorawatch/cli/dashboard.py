"""``lorawatch dashboard``: serve the Streamlit dashboard headless on localhost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from lorawatch.app.auth import add_user, new_password
from lorawatch.app.auth import hash_password as make
from lorawatch.cli.context import AppContext, pass_app
from lorawatch.errors import InputError
from lorawatch.settings import Settings

APP = Path(__file__).parent.parent / "app" / "dashboard.py"  # lorawatch/app: the app/ folder


def serve(settings: Settings, *, port: int | None = None, address: str | None = None, say=print) -> int:
    """Run ``streamlit run app/dashboard.py`` in the foreground with this process's settings."""
    port = port or settings.dashboard.port
    address = address or settings.dashboard.address
    env = dict(os.environ)
    if settings.source is not None:
        env["LORAWATCH_CONFIG"] = str(Path(settings.source).resolve())
    env["LORAWATCH_HOME"] = str(settings.home_dir)
    if settings.database.url:
        env["LORAWATCH_DATABASE_URL"] = settings.database.url
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    say(f"LoraWatch dashboard: http://{address}:{port}  (Ctrl-C stops it)")
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--browser.gatherUsageStats",
        "false",
        "--theme.base",
        "light",
        "--client.toolbarMode",
        "viewer",
    ]
    proc = subprocess.Popen(cmd, env=env)
    # a supervisor's SIGTERM (systemd, Kubernetes, a test) must reach the server too, or it
    # would outlive this process
    forwarded = (signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda signum, frame: proc.send_signal(signum)) for sig in forwarded}
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command()
@click.option("--port", type=int, default=None, help="Port (default: dashboard.port, 8501).")
@click.option("--address", default=None, help="Address to bind (default: dashboard.address, 127.0.0.1).")
@click.option(
    "--hash-password", is_flag=True, help="Read a password on stdin and print its hash for [dashboard.users.NAME]."
)
@click.option(
    "--add-user",
    "add_user_name",
    metavar="NAME",
    default=None,
    help="Add or replace a responder who may act on the dashboard; reads the password on stdin "
    "(stored hashed in $LORAWATCH_HOME/dashboard-users.toml).",
)
@click.option("--generate-password", is_flag=True, help="With --add-user: make a password and print it once.")
@pass_app
def dashboard(app: AppContext, port, address, hash_password, add_user_name, generate_password) -> None:
    """Serve the Streamlit dashboard (headless; open the printed URL)."""
    if generate_password and not add_user_name:
        raise InputError("--generate-password goes with --add-user NAME", fix="add --add-user NAME")
    if add_user_name:
        if generate_password:
            password = new_password()
        else:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=sys.stdin.isatty())
        path = add_user(app.settings, add_user_name, password)
        click.echo(f"responder {add_user_name} can sign in to the dashboard (hash in {path})", err=True)
        if generate_password:
            click.echo(f"password: {password}")
        return
    if hash_password:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=sys.stdin.isatty())
        click.echo(make(password))
        return
    app.database  # the schema is checked before the server starts  # noqa: B018
    raise SystemExit(serve(app.settings, port=port, address=address, say=lambda m: click.echo(m, err=True)))
