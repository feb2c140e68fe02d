"""The database layer: the only place that talks SQL.

``open_database(settings)`` gives a ``Database`` with a session factory. SQLite (the embedded
default) runs in WAL mode with a busy timeout and foreign keys on; PostgreSQL is selected by
URL. The schema is owned by Alembic migrations (``lorawatch/migrations``); ``upgrade()``
creates or upgrades it and is idempotent.
"""

from __future__ import annotations

import atexit
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from lorawatch.errors import ConfigError, ConflictError, DependencyError
from lorawatch.privacy import private_dir, private_file
from lorawatch.secrets import scrub
from lorawatch.settings import Settings, load_settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# The newest migration's revision: every command checks the database against it without
# importing Alembic, which parses every migration script (tests/test_db.py checks that it is
# Alembic's head).
SCHEMA_HEAD = "0011"


def unreachable(db: Database, exc: Exception) -> DependencyError:
    """A driver error on connecting as one line: the database (password hidden), what the
    driver said (scrubbed of secrets), and the fix."""
    said = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first = scrub(said[0] if said else type(exc).__name__)[:300]
    return DependencyError(
        f"cannot use the database {db.safe_url}: {first}",
        fix="check database.url (or $LORAWATCH_DATABASE_URL), that the server runs and accepts this user",
    )


def insert_unique(session: Session, row: object) -> bool:
    """Insert ``row`` in a savepoint: True if it went in, False if a unique key already held it
    (another process committed the same name a moment ago). Either way the session's transaction
    stays usable. The row is added inside the savepoint: ``begin_nested()`` flushes what is
    pending before it opens, so a row added earlier would fail outside the savepoint and poison
    the whole transaction (PostgreSQL; SQLite serialises writers and rarely gets there)."""
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except DBIntegrityError:
        return False
    return True


class Database:
    """An engine, a session factory and the migration commands for one database URL."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 10_000) -> None:
        try:
            parsed = make_url(url)
        except Exception:
            raise ConfigError(
                f"not a database URL: {_redact(url)}",
                where="database.url",
                fix="use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
            ) from None
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        kwargs: dict = {"future": True}
        self.file: Path | None = None
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                self.file = Path(parsed.database).expanduser()
                if not self.file.parent.exists():
                    private_dir(self.file.parent)
            kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(parsed, **kwargs)
        _engines.add(self.engine)
        if self.is_sqlite:
            _configure_sqlite(self.engine, busy_timeout_ms, self.file)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for logs and output."""
        return _redact(self.url)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back when it raises."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def upgrade(self, revision: str = "head") -> None:
        """Create or upgrade the schema to ``revision`` (idempotent)."""
        # Deferred: Alembic takes about half a second to import; only schema changes need it.
        from alembic import command

        with self.engine.begin() as connection:
            config = alembic_config(connection)
            command.upgrade(config, revision)

    def downgrade(self, revision: str) -> None:
        """Undo migrations down to ``revision`` (``base`` empties the schema)."""
        # Deferred: as in upgrade().
        from alembic import command

        with self.engine.begin() as connection:
            command.downgrade(alembic_config(connection), revision)

    def current_revision(self) -> str | None:
        """The schema revision the database is at, or None for an empty database (read from
        Alembic's version table, as Alembic reads it)."""

        with self.engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        if len(versions) > 1:
            raise ConflictError(
                f"database schema is at several revisions at once ({', '.join(sorted(versions))})",
                where=self.safe_url,
                fix="merge the branches with alembic, or restore the database from a backup",
            )
        return versions[0] if versions else None

    def head_revision(self) -> str:
        """The newest revision the code knows, from the migration scripts."""
        # Deferred: as in upgrade().
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert head is not None, "lorawatch/migrations/versions holds no migration"
        return head

    def ensure_schema(self) -> None:
        """Make sure the schema is current before use.

        An empty SQLite file (the embedded default) is created on first use; an older schema
        or an empty server database needs an explicit ``lorawatch init``, so that upgrades of a
        shared database are deliberate.
        """
        try:
            current = self.current_revision()
        except DBAPIError as exc:
            raise unreachable(self, exc) from None
        head = SCHEMA_HEAD
        if current == head:
            return
        if current is None and self.is_sqlite and not inspect(self.engine).get_table_names():
            self.upgrade()
            return
        raise ConflictError(
            f"database schema is at revision {current or 'none'}, this LoraWatch needs {head}",
            where=self.safe_url,
            fix="run `lorawatch init` to create or upgrade it",
        )

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


# Every engine made, closed at exit: a command that ends with os._exit (``cli.leave``) runs the
# exit handlers first, and a PostgreSQL server then sees its connections closed, not dropped.
_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


@atexit.register
def _close_engines() -> None:
    for engine in list(_engines):
        engine.dispose()


def _configure_sqlite(engine: Engine, busy_timeout_ms: int, file: Path | None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        if file is not None:  # owner-only; SQLite gives its -wal and -shm files the same mode
            private_file(file)
        # pysqlite's own transaction handling defers BEGIN; emit it ourselves so that
        # a transaction that writes takes the lock at its start (no upgrade deadlocks).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def alembic_config(connection=None):
    """An Alembic Config for our migrations, bound to ``connection`` when given."""
    # Deferred: as in Database.upgrade().
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def open_database(settings: Settings | None = None) -> Database:
    """The database named by the settings (loaded when not given)."""
    if settings is None:
        settings = load_settings()
    private_dir(settings.home_dir)
    return Database(settings.database_url, busy_timeout_ms=settings.database.busy_timeout_ms)
