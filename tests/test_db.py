from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from lorawatch import audit
from lorawatch.db import Database
from lorawatch.db.models import Base
from lorawatch.errors import ConflictError


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'x.db'}", busy_timeout_ms=1234)
    with database.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    database.dispose()


def test_migrations_match_the_models(db):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent_and_downgrade_removes_everything(db):
    from alembic.migration import MigrationContext

    from lorawatch.db import SCHEMA_HEAD

    head = db.head_revision()
    assert head == SCHEMA_HEAD  # the constant commands check against is the newest migration
    with db.engine.connect() as conn:  # our reading of the version table is Alembic's
        assert db.current_revision() == MigrationContext.configure(conn).get_current_revision() == head
    db.downgrade("0010")
    assert db.current_revision() == "0010"
    with pytest.raises(ConflictError, match="at revision 0010, this LoraWatch needs 0011"):
        db.ensure_schema()
    db.upgrade()
    assert db.current_revision() == head
    db.upgrade()
    with db.engine.begin() as conn:  # a second row: two branches at once, which Alembic refuses too
        conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES ('0009')")
    with pytest.raises(ConflictError, match=r"several revisions at once \(0009, 0011\)"):
        db.ensure_schema()
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM alembic_version WHERE version_num = '0009'")
    db.downgrade("base")
    assert db.current_revision() is None
    db.upgrade()
    assert db.current_revision() == head


def test_a_failed_transaction_writes_nothing(db):
    with pytest.raises(RuntimeError), db.session() as session:
        audit.record(session, actor="a", action="x", object_type="t", object_id="1")
        session.flush()
        raise RuntimeError("boom")
    with db.session() as session:
        assert audit.entries(session) == []


def test_timestamps_come_back_in_utc(db):
    when = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    with db.session() as session:
        audit.record(session, actor="a", action="x", object_type="t", object_id="1", ts=when)
    with db.session() as session:
        (entry,) = audit.entries(session)
    assert entry.ts == when
    assert entry.ts.tzinfo is not None and entry.ts.utcoffset() == timedelta(0)
    assert entry.ts.hour == 10


def test_naive_datetimes_are_refused(db):
    with pytest.raises(Exception, match="naive datetime"), db.session() as session:
        audit.record(session, actor="a", action="x", object_type="t", object_id="1", ts=datetime(2026, 1, 1))


def test_passwords_never_show_in_the_safe_url():
    database = Database("postgresql+psycopg://u:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in database.safe_url
    database.dispose()
