"""Alembic environment of the audit store, driven programmatically by :mod:`infra.db.migrate`.

The caller hands over an open connection (``config.attributes["connection"]``), already inside
its transaction, so a migration is all-or-nothing on PostgreSQL and SQLite alike. Without one,
``sqlalchemy.url`` names the database. SQLite migrations run in batch mode; a batch rebuild of
``reconciliation_audit`` drops its triggers, so such a migration must create them again.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from infra.db.engine import create_audit_engine
from infra.db.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection and no sqlalchemy.url given to the migrations")
    engine = create_audit_engine(url)
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported: triggers differ by dialect")
_run_online()
