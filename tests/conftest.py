"""Shared fixtures: a real database per test (SQLite always, PostgreSQL when
``LORAWATCH_TEST_POSTGRES_URL`` is set), an isolated LoraWatch home, and an in-process CLI."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "TRITON_INTERPRET" not in os.environ:
    import torch

    # without a GPU the fused Triton kernels run (in tests/test_kernels.py) under the interpreter;
    # monitors.kernels reads this when it is first imported
    os.environ["TRITON_INTERPRET"] = "0" if torch.cuda.is_available() else "1"


def pytest_report_header(config):
    """Which CPU kernels torch runs: drift figures are checked to hold whatever they are."""
    import torch

    chosen = os.environ.get("ATEN_CPU_CAPABILITY", "not set")
    return (
        f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()} "
        f"(ATEN_CPU_CAPABILITY={chosen}), {torch.get_num_threads()} threads"
    )


pytest_plugins = ["tests.canary_fixtures"]

PG_URL = os.environ.get("LORAWATCH_TEST_POSTGRES_URL")


@pytest.fixture(autouse=True, scope="session")
def _default_plugins():
    """What every entry point does first: incidents register with alert evaluation."""
    from lorawatch.plugins import load_default_plugins

    load_default_plugins()


BACKENDS = ["db:sqlite"] + (["db:postgresql"] if PG_URL else [])


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """No test reads the user's settings or writes to ~/.lorawatch."""
    monkeypatch.setenv("LORAWATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LORAWATCH_ACTOR", "tester")
    monkeypatch.delenv("LORAWATCH_CONFIG", raising=False)
    monkeypatch.delenv("LORAWATCH_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """The URL of a fresh, empty database on each backend."""
    if request.param == "db:sqlite":
        yield f"sqlite:///{tmp_path / 'lorawatch-test.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"lw_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def _migrated_templates(tmp_path_factory):
    """Each backend's schema, migrated once per session; ``db`` copies it (8 migrations per test
    cost more than the tests they set up)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from lorawatch.db import Database

    path = tmp_path_factory.mktemp("template") / "template.db"
    templates = {"db:sqlite": path}
    template = Database(f"sqlite:///{path}")
    template.upgrade()
    template.dispose()  # the last connection checkpoints the WAL into the file that is copied
    if PG_URL:
        name = f"lw_template_{uuid.uuid4().hex[:12]}"
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        database = Database(make_url(PG_URL).set(database=name).render_as_string(hide_password=False))
        database.upgrade()
        database.dispose()
        templates["db:postgresql"] = name
    yield templates
    if PG_URL:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def db(database_url, _migrated_templates):
    """A migrated database on each backend (a copy of the session's migrated template)."""
    import shutil

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from lorawatch.db import Database

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        shutil.copyfile(_migrated_templates["db:sqlite"], url.database)
    else:
        admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{url.database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{url.database}" TEMPLATE "{_migrated_templates["db:postgresql"]}"'))
        admin.dispose()
    database = Database(database_url)
    database.upgrade()  # a no-op on the copy; it checks the revision
    yield database
    database.dispose()


@pytest.fixture
def lw_env(database_url, monkeypatch):
    """Point LoraWatch (settings, CLI) at the test database."""
    monkeypatch.setenv("LORAWATCH_DATABASE_URL", database_url)
    return database_url


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self):
        import json

        return json.loads(self.out)


@pytest.fixture
def cli(capsys):
    """Run ``lorawatch ARGS...`` in this process; returns exit code, stdout and stderr."""
    from lorawatch.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


_counts = {"db:sqlite": 0, "db:postgresql": 0}


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed:
        for backend in _counts:
            if f"[{backend}" in report.nodeid or f"-{backend}" in report.nodeid:
                _counts[backend] += 1


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_sep("-", "database backends")
    terminalreporter.write_line(f"passed against SQLite:     {_counts['db:sqlite']}")
    pg = _counts["db:postgresql"]
    note = "" if PG_URL else " (LORAWATCH_TEST_POSTGRES_URL not set)"
    terminalreporter.write_line(f"passed against PostgreSQL: {pg}{note}")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A tiny random Llama with its tokenizer (built once per session)."""
    from tests.tiny_models import build_base

    return build_base(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def trained_adapter(tiny_base, tmp_path_factory):
    """A real LoRA adapter trained on the tiny base."""
    from tests.tiny_models import train_adapter

    return train_adapter(tiny_base, tmp_path_factory.mktemp("adapters") / "support-v1")


@pytest.fixture(scope="session")
def second_adapter(tiny_base, tmp_path_factory):
    """Another trained LoRA adapter on the tiny base (different seed and data)."""
    from tests.tiny_models import CORPUS, train_adapter

    return train_adapter(tiny_base, tmp_path_factory.mktemp("adapters") / "support-v2", seed=1, texts=CORPUS[5:15])


@pytest.fixture(scope="session")
def zero_adapter(tiny_base, tmp_path_factory):
    """A LoRA adapter whose B matrices are zero: it changes nothing."""
    from tests.tiny_models import train_adapter

    return train_adapter(tiny_base, tmp_path_factory.mktemp("adapters") / "zero", zero=True)


@pytest.fixture(scope="session")
def drifting_adapter(tiny_base, tmp_path_factory):
    """A LoRA adapter that moves the model far by construction (mean KL about 10 on the tiny
    base, ten times the default threshold), whatever kernels torch picks on this CPU."""
    from tests.tiny_models import drift_adapter

    return drift_adapter(tiny_base, tmp_path_factory.mktemp("adapters") / "drifting")
