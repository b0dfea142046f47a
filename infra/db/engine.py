"""Engines for the audit store: SQLite (tests, embedded default) and PostgreSQL (production).

SQLite gets a 30 s busy timeout (concurrent workers wait for the write lock instead of failing),
WAL journalling (readers never block the writer), foreign keys, and real transactions: the
``sqlite3`` driver's legacy mode neither begins a transaction before DDL nor lets a transaction
take the write lock up front, so SQLAlchemy emits BEGIN itself (the recipe of SQLAlchemy's
SQLite dialect documentation). A connection whose execution options carry
``sqlite_begin="IMMEDIATE"`` takes the write lock at BEGIN; writers use it.

``postgresql://`` URLs are served by psycopg 3; an unreachable server fails within 10 s
(``connect_timeout``, unless the URL sets it) instead of the OS's minutes. Statement
parameters are hidden from logs and error messages (``hide_parameters``): they hold balances.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Final

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import ConnectionPoolEntry

#: Seconds a SQLite connection waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_SECONDS: Final = 30

_WAL_SWITCH_RETRY_SECONDS: Final = 0.02

#: Execution option naming the BEGIN flavour on SQLite (``"DEFERRED"`` unless set).
SQLITE_BEGIN_OPTION: Final = "sqlite_begin"


def create_audit_engine(url: str | URL) -> Engine:
    """An engine for ``url`` configured for the audit store; connects lazily."""
    sa_url = make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        return _sqlite_engine(sa_url)
    if sa_url.get_backend_name() == "postgresql" and sa_url.drivername == "postgresql":
        sa_url = sa_url.set(drivername="postgresql+psycopg")
    connect_args = {} if "connect_timeout" in sa_url.query else {"connect_timeout": 10}
    return create_engine(
        sa_url, connect_args=connect_args, pool_pre_ping=True, hide_parameters=True
    )


def _sqlite_engine(url: URL) -> Engine:
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
        hide_parameters=True,
    )
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    # The driver must not issue BEGIN/COMMIT behind SQLAlchemy's back (see module docstring).
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA foreign_keys = ON").close()
    if dbapi_connection.execute("PRAGMA journal_mode").fetchone() != ("wal",):
        _switch_to_wal(dbapi_connection)


def _switch_to_wal(dbapi_connection: sqlite3.Connection) -> None:
    # Switching a file to WAL takes an exclusive lock. Two connections switching a new file at
    # once can deadlock, and SQLite then answers "database is locked" at once instead of
    # waiting out the busy timeout, so the wait happens here.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode = WAL").close()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(_WAL_SWITCH_RETRY_SECONDS)
        else:
            return


def _on_sqlite_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
    if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
        raise ValueError(f"unknown SQLite BEGIN mode {mode!r}")
    connection.exec_driver_sql(f"BEGIN {mode}")


__all__ = ["SQLITE_BEGIN_OPTION", "SQLITE_BUSY_TIMEOUT_SECONDS", "create_audit_engine"]
