"""Schema migrations of the audit store: Alembic, configured in code (no ``alembic.ini``).

``upgrade`` brings any database to head in one transaction. ``ensure_schema`` is what the
application calls before using the store: SQLite (tests, the embedded default) is migrated on
first use; any other database must already be at head (``recon db upgrade``), so that production
schema changes stay a deliberate operator step.

On SQLite the migration holds the write lock from its BEGIN (``BEGIN IMMEDIATE``), so processes
starting together on an empty file migrate it once: the others wait, then find it at head.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from infra.db.engine import SQLITE_BEGIN_OPTION, create_audit_engine
from infra.db.errors import AuditStoreError, SchemaNotReady, describe_database_error

MIGRATIONS_PACKAGE: Final = "infra.db.migrations"


def alembic_config() -> Config:
    """The Alembic configuration of the audit store's migrations (shipped as package data)."""
    config = Config()
    config.set_main_option("script_location", str(files(MIGRATIONS_PACKAGE)))
    return config


def upgrade(target: Engine | str, revision: str = "head") -> None:
    """Migrate the database of ``target`` (an engine or a URL) up to ``revision``."""
    with _migration_connection(target) as (connection, config):
        command.upgrade(config, revision)
        connection.commit()


def downgrade(target: Engine | str, revision: str = "base") -> None:
    """Migrate the database of ``target`` down to ``revision`` (``base`` drops everything)."""
    with _migration_connection(target) as (connection, config):
        command.downgrade(config, revision)
        connection.commit()


def ensure_schema(engine: Engine) -> None:
    """Make sure the audit schema is at head: migrate SQLite, refuse any other stale database.

    Raises :class:`SchemaNotReady` when a non-SQLite database is not at head.
    """
    if engine.dialect.name == "sqlite":
        if not is_at_head(engine):
            upgrade(engine)
        return
    if not is_at_head(engine):
        raise SchemaNotReady(
            f"the audit schema of {engine.url.render_as_string(hide_password=True)} is not "
            "up to date: run `recon db upgrade`"
        )


def is_at_head(engine: Engine) -> bool:
    """Whether the database's Alembic revision is the migrations' head."""
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    try:
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    except SQLAlchemyError as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise AuditStoreError(
            f"cannot open the audit store {where}: {describe_database_error(exc)}"
        ) from None
    return current == heads


@contextmanager
def _migration_connection(target: Engine | str) -> Iterator[tuple[Connection, Config]]:
    engine = create_audit_engine(target) if isinstance(target, str) else target
    try:
        options = {SQLITE_BEGIN_OPTION: "IMMEDIATE"} if engine.dialect.name == "sqlite" else {}
        with engine.connect().execution_options(**options) as connection:
            connection.begin()
            config = alembic_config()
            config.attributes["connection"] = connection
            yield connection, config
    finally:
        if isinstance(target, str):
            engine.dispose()


__all__ = ["alembic_config", "downgrade", "ensure_schema", "is_at_head", "upgrade"]
