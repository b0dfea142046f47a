"""Failures of the audit store, one tree for the whole ``infra.db`` boundary.

AuditStoreError           the audit store could not do what was asked (nothing was written)
 └── SchemaNotReady       the database's schema is not at the migrations' head
"""

from __future__ import annotations

import psycopg
from sqlalchemy.exc import SQLAlchemyError


class AuditStoreError(RuntimeError):
    """Raised when a read or write of the audit store fails; a failed write wrote nothing.

    Messages name the cycle or row and the database's error class, never a balance.
    """


class SchemaNotReady(AuditStoreError):
    """Raised when a non-SQLite database is not migrated to head (run ``recon db upgrade``)."""


def describe_database_error(exc: SQLAlchemyError | psycopg.Error) -> str:
    """The database error's class and first line: later lines (DETAIL) can quote row values."""
    cause: BaseException = getattr(exc, "orig", None) or exc
    return f"{type(cause).__name__}: {str(cause).partition(chr(10))[0]}"
