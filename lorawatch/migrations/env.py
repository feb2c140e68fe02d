"""Alembic environment: runs against the connection LoraWatch hands over, or the one the
settings name when called as ``alembic`` from the repository root."""

from __future__ import annotations

from alembic import context

from lorawatch.db.models import Base

target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from lorawatch.db import open_database

    database = open_database()
    with database.engine.begin() as conn:
        _run(conn)
