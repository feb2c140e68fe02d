from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorawatch import __version__

LORAWATCH = Path(sys.executable).parent / "lorawatch"


def test_version(cli):
    result = cli("--version")
    assert result.code == 0
    assert __version__ in result.out


def test_every_command_has_help(cli):
    import click

    from lorawatch.cli import cli as root

    def walk(group: click.Group, prefix: list[str]):
        for name in group.list_commands(None):  # the top-level group loads its commands lazily
            command = group.get_command(None, name)
            assert command is not None and command.name == name, name
            yield prefix + [name], command
            if isinstance(command, click.Group):
                yield from walk(command, prefix + [name])

    seen = 0
    for path, command in walk(root, []):
        result = cli(*path, "--help")
        assert result.code == 0, path
        assert "Usage:" in result.out
        assert command.help, f"{' '.join(path)} has no help text"
        seen += 1
    assert seen >= 5


def test_the_lazy_command_table_matches_the_commands():
    import click

    from lorawatch.cli import COMMANDS
    from lorawatch.cli import cli as root

    ctx = click.Context(root)
    for name, (_, _, summary) in COMMANDS.items():
        command = root.get_command(ctx, name)
        first = (command.help or "").split("\n\n")[0].replace("\n", " ")
        assert first.startswith(summary), f"COMMANDS[{name!r}] summary differs from the command's help: {first!r}"


def test_help_starts_fast_and_imports_nothing_heavy():
    code = (
        "import sys, time; t=time.perf_counter();"
        "from lorawatch.cli import cli;"
        "heavy=[m for m in ('torch','transformers','peft','sqlalchemy','pandas','numpy','pydantic','streamlit') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    # and --help itself loads no command group (each imports its services at its top)
    code = (
        "import sys; from lorawatch.cli import main;"
        "sys.argv=['lorawatch','--help'];"
        "import atexit; atexit.register(lambda: print(sorted(m for m in sys.modules if m.startswith('lorawatch.'))));"
        "main()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    loaded = out.stdout.strip().splitlines()[-1]
    assert "lorawatch.cli.alerts" not in loaded and "lorawatch.db" not in loaded, loaded


def test_a_command_on_a_current_database_imports_neither_alembic_nor_pandas(cli, lw_env):
    """Checking the schema reads the version table (Alembic only migrates), and evaluating
    monitors leaves pandas to ingestion: a canary run pays for neither."""
    assert cli("init").code == 0
    code = (
        "import sys; from lorawatch.db import open_database; from lorawatch.monitors.registry import all_monitors;"
        "db = open_database(); db.ensure_schema(); assert all_monitors('traffic') and all_monitors('canary');"
        "print([m for m in ('alembic', 'pandas') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_init_creates_the_database_and_a_default_config(cli, lw_env, tmp_path):
    result = cli("init", "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["upgraded"] is True and data["revision_before"] is None
    assert data["wrote_config"] is True
    assert (tmp_path / "lorawatch.toml").is_file()


def test_init_twice_keeps_schema_and_data(cli, lw_env, tmp_path):
    from sqlalchemy import inspect

    from lorawatch import audit
    from lorawatch.db import Database

    assert cli("init").code == 0
    database = Database(lw_env)
    with database.session() as session:
        audit.record(session, actor="a", action="test", object_type="x", object_id="1", reason="r")

    def snapshot():
        insp = inspect(database.engine)
        schema = {
            t: sorted((c["name"], str(c["type"])) for c in insp.get_columns(t)) for t in sorted(insp.get_table_names())
        }
        with database.session() as session:
            rows = [(e.actor, e.action, e.reason) for e in audit.entries(session)]
        return schema, rows

    before = snapshot()
    config_before = (tmp_path / "lorawatch.toml").read_text()
    second = cli("init", "--json")
    assert second.code == 0
    assert second.json()["upgraded"] is False
    assert second.json()["wrote_config"] is False
    assert snapshot() == before
    assert (tmp_path / "lorawatch.toml").read_text() == config_before
    database.dispose()


@pytest.mark.parametrize(
    "content,words",
    [
        ("[canary\n", ["invalid TOML"]),
        ("[canary]\nbatchsize = 3\n", ['unknown key "canary.batchsize"']),
        ("[canary]\nbatch_size = 'x'\n", ['"canary.batch_size"', "integer"]),
    ],
)
def test_a_malformed_config_exits_2_with_one_line_and_no_traceback(tmp_path, content, words):
    (tmp_path / "lorawatch.toml").write_text(content)
    env = dict(os.environ)
    out = subprocess.run([str(LORAWATCH), "init"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert "lorawatch.toml:" in lines[0] and "fix:" in lines[0]
    for word in words:
        assert word in lines[0]
    assert not (tmp_path / "home" / "lorawatch.db").exists()


def test_a_usage_error_exits_2(cli):
    result = cli("init", "--no-such-option")
    assert result.code == 2
    assert "no such option" in result.err.lower()


def test_an_outdated_server_schema_asks_for_init(cli, lw_env, db):
    from lorawatch.db import Database

    database = Database(lw_env)
    database.downgrade("base")
    with database.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE unrelated (x INTEGER)")
    result = cli("audit", "list")
    assert result.code == 2
    assert "lorawatch init" in result.err
    database.dispose()


def test_audit_list_reads_the_log(cli, lw_env, db):
    from lorawatch import audit

    with db.session() as session:
        audit.record(session, actor="ana", action="promote", object_type="adapter", object_id="a1", reason="ok")
        audit.record(session, actor="bo", action="rollback", object_type="adapter", object_id="a2", reason="bad")
    result = cli("audit", "list", "--object", "adapter:a2", "--json")
    assert result.code == 0, result.err
    rows = result.json()
    assert [(r["actor"], r["action"], r["reason"]) for r in rows] == [("bo", "rollback", "bad")]
    text = cli("audit", "list")
    assert "promote" in text.out and "rollback" in text.out


def test_unknown_names_exit_2_with_the_closest_known_one(cli, lw_env, tiny_base, trained_adapter):
    assert cli("init").code == 0
    assert cli("registry", "add-base", "tiny", "--path", tiny_base).code == 0
    assert (
        cli(
            "registry", "add", "support-risky", "--path", trained_adapter, "--base", "tiny", "--promote", "production"
        ).code
        == 0
    )
    for args, expected in (
        (("alerts", "list", "--adapter", "support-riskyy"), "did you mean support-risky?"),
        (("latency", "--adapter", "support-riskyy"), "did you mean support-risky?"),
        (("registry", "show", "support-risky", "--alias", "prod"), "did you mean production?"),
        (("registry", "show", "support-riskyy"), "did you mean support-risky?"),
        (("registry", "show", "support-risky", "--version", "v9"), 'has no version "v9"'),
        (("registry", "add", "x", "--path", str(trained_adapter), "--base", "tinny"), "did you mean tiny?"),
    ):
        result = cli(*args)
        assert result.code == 2 and expected in result.err, (args, result.err)
    assert cli("registry", "show", "support-risky", "--alias", "production").code == 0


def test_notify_flush_exits_3_when_something_was_not_delivered(cli, lw_env, tmp_path, monkeypatch):
    from datetime import UTC, datetime

    from lorawatch.db import Database
    from lorawatch.db.models import Notification

    config = tmp_path / "lorawatch.toml"
    config.write_text(
        '[alerts.receivers.dead]\ntype = "webhook"\nurl = { env = "LW_DEAD_URL" }\ntimeout_s = 0.5\n'
        '[alerts.route]\nreceiver = "dead"\n'
    )
    monkeypatch.setenv("LORAWATCH_CONFIG", str(config))
    monkeypatch.setenv("LW_DEAD_URL", "http://127.0.0.1:9/hook")  # the discard port: connection refused
    assert cli("init").code == 0
    assert cli("notify", "flush", "--deadline", "1s").code == 0  # nothing to send
    database = Database(lw_env)
    with database.session() as session:
        now = datetime.now(UTC)
        session.add(
            Notification(
                receiver="dead",
                status="pending",
                payload={"status": "firing", "alerts": []},
                created_at=now,
                next_attempt_at=now,
            )
        )
    database.dispose()
    result = cli("notify", "flush", "--deadline", "1s")
    assert result.code == 3 and "0 delivered, 1 deferred" in result.out, (result.out, result.err)


def test_promoting_during_an_open_incident_warns_but_promotes(cli, lw_env, tiny_base, trained_adapter, second_adapter):
    assert cli("init").code == 0
    assert cli("registry", "add-base", "tiny", "--path", tiny_base).code == 0
    assert cli("registry", "add", "bot", "--path", trained_adapter, "--base", "tiny", "--version", "v1").code == 0
    assert cli("registry", "add", "bot", "--path", second_adapter, "--base", "tiny", "--version", "v2").code == 0
    quiet = cli("registry", "promote", "bot", "--version", "v1", "--reason", "launch", "--json")
    assert quiet.code == 0 and quiet.json()["warnings"] == [] and "warning" not in quiet.err
    assert (
        cli("incident", "open", "--title", "bot insults users", "--adapter", "bot", "--severity", "critical").code == 0
    )
    loud = cli("registry", "promote", "bot", "--version", "v2", "--reason", "fix", "--json")
    assert loud.code == 0 and "open incident" in loud.err
    assert loud.json()["to_version"] == "v2" and "bot insults users" in loud.json()["warnings"][0]


def test_after_the_model_libraries_the_entry_point_ends_at_once_keeping_its_output_status_and_exit_handlers(
    cli, tmp_path
):
    """``lorawatch`` skips the interpreter's module teardown (seconds after torch) once its exit
    handlers ran and its output is flushed; called in a process that goes on, it raises
    SystemExit as before (this very test process has torch loaded)."""
    import subprocess
    import sys

    code = (
        "import sys, atexit, torch; from lorawatch.cli import main;"
        "sys.argv=['lorawatch','registry','show','no-such-adapter'];"
        "atexit.register(lambda: print('exit handlers ran'));"
        "print('buffered output', end='');"
        "main()"
    )
    env = {**os.environ, "LORAWATCH_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 2, out.stderr
    assert out.stdout == "buffered outputexit handlers ran\n"
    assert 'no adapter "no-such-adapter"' in out.stderr or "no-such-adapter" in out.stderr
    assert "torch" in sys.modules
    assert cli("registry", "show", "no-such-adapter").code == 2  # in this process: SystemExit, not the end of it
