"""The audit store's repository: writes each cycle's reports once, reads whole reports back.

A cycle is written in one transaction and one statement holding all its rows (PostgreSQL:
``COPY``; SQLite: ``INSERT … ON CONFLICT (reconciliation_id) DO NOTHING``), the rows already
recorded left out first, so a redelivered cycle writes nothing twice and a failed write leaves
nothing behind. Each new row is chained (:mod:`infra.db.chain`) to its account's
latest row, read in the same transaction under a lock that serialises writers. Reads rebuild
:class:`domain.report.Report` objects through the report JSON of :mod:`domain.serialization`,
which also checks the stored status against them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Final

import psycopg
from sqlalchemy import Connection, Engine, Select, bindparam, func, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from domain.report import Report
from domain.serialization import (
    SerializationError,
    balances_to_json_text,
    discrepancy_to_json,
    error_to_json,
    format_timestamp,
    recovery_to_json,
    report_from_json,
)
from infra.db.chain import PreparedRow
from infra.db.engine import SQLITE_BEGIN_OPTION
from infra.db.errors import AuditStoreError, describe_database_error
from infra.db.models import AUDIT_TABLE, MUTABLE_COLUMNS, ReconciliationAudit

logger = logging.getLogger(__name__)

#: Rows per INSERT statement: a whole cycle, up to the dialect's bind-parameter limit.
_ROWS_PER_STATEMENT: Final = 100_000

#: Text of PostgreSQL's transaction-scoped advisory lock serialising appends to the chain.
CHAIN_LOCK_KEY: Final = "recon-audit-chain"

# The chain's reads take their keys as one JSON array parameter (any cycle size, one bind),
# and find each account's head by an index seek on (account_id, id), not a scan of its history.
_RECORDED: Final = {
    "sqlite": text(
        "SELECT reconciliation_id FROM reconciliation_audit"
        " WHERE reconciliation_id IN (SELECT value FROM json_each(:keys))"
    ),
    "postgresql": text(
        "SELECT reconciliation_id FROM reconciliation_audit"
        " WHERE reconciliation_id IN (SELECT json_array_elements_text(CAST(:keys AS json)))"
    ),
}
_HEADS: Final = {
    "sqlite": text(
        "SELECT w.account_id, (SELECT r.row_hash FROM reconciliation_audit r"
        " WHERE r.account_id = w.account_id ORDER BY r.id DESC LIMIT 1)"
        " FROM (SELECT value AS account_id FROM json_each(:accounts)) w"
    ),
    "postgresql": text(
        "SELECT w.account_id, (SELECT r.row_hash FROM reconciliation_audit r"
        " WHERE r.account_id = w.account_id ORDER BY r.id DESC LIMIT 1)"
        " FROM json_array_elements_text(CAST(:accounts AS json)) AS w(account_id)"
    ),
}

#: The columns a cycle's INSERT sets: the facts, but the id and created_at the database assigns.
_INSERTED: Final = tuple(
    c.name for c in AUDIT_TABLE.columns if c.name not in {"id", "created_at", *MUTABLE_COLUMNS}
)

_Rows = list[dict[str, Any]]


class AuditRepository:
    """Reads and appends rows of ``reconciliation_audit`` through ``engine``."""

    def __init__(
        self, engine: Engine, *, check_schema: Callable[[Engine], None] | None = None
    ) -> None:
        """``check_schema``, when given, runs before the first read or write (again after it
        failed): a worker builds its repository before the database may be reachable, and
        only the tasks that use the store then wait for it (they retry), not the fetches."""
        if engine.dialect.name not in _DIALECTS:
            raise AuditStoreError(
                f"the audit store does not support the {engine.dialect.name} dialect"
            )
        self._engine = engine
        self._check_schema = check_schema
        self._check_lock = threading.Lock()

    def _ready(self) -> None:
        """Run the pending schema check (raises AuditStoreError, e.g. SchemaNotReady)."""
        if self._check_schema is None:
            return
        with self._check_lock:
            if self._check_schema is not None:
                self._check_schema(self._engine)
                self._check_schema = None

    def record_cycle(self, reports: Sequence[Report]) -> int:
        """Append one row per report, atomically; return how many rows were new.

        Reports already recorded (same ``reconciliation_id``) are skipped. Any database failure
        raises :class:`AuditStoreError` and writes nothing.
        """
        if not reports:
            return 0
        self._ready()
        encode_started = time.perf_counter()
        rows = [_row_of(report) for report in reports]
        prepared = [PreparedRow(row) for row in rows]
        cycles = ",".join(sorted({report.cycle_id for report in reports}))
        write_started = time.perf_counter()
        try:
            with self._engine.connect() as connection:
                # SQLite: take the write lock at BEGIN; the other writers wait for it.
                connection.execution_options(
                    insertmanyvalues_page_size=_ROWS_PER_STATEMENT,
                    **{SQLITE_BEGIN_OPTION: "IMMEDIATE"},
                )
                with connection.begin():
                    fresh = _chain(connection, rows, prepared)
                    written = 0
                    if fresh and connection.dialect.name == "postgresql":
                        written = _copy_rows(connection, fresh)
                    elif fresh:  # SQLite
                        # Counted from RETURNING: drivers' rowcount for INSERT is not dependable.
                        result = connection.execute(_SQLITE_INSERT, fresh)
                        written = len(result.all())
        except (SQLAlchemyError, psycopg.Error) as exc:  # psycopg's own: the COPY
            # from None: the driver's detail lines can quote a whole row, balances included.
            reason = describe_database_error(exc)
            raise AuditStoreError(
                f"audit write of cycle {cycles} failed, nothing written: {reason}"
            ) from None
        # The bench reads this line: the rows' encoding, then the transaction (chain, write,
        # commit), timed apart.
        logger.debug(
            "audit write: cycle=%s rows=%d new=%d encode_seconds=%.6f seconds=%.6f",
            cycles,
            len(reports),
            written,
            write_started - encode_started,
            time.perf_counter() - write_started,
        )
        return written

    def record_recoveries(self, reports: Sequence[Report]) -> int:
        """Record each report's confirmation in its row's recovery columns, atomically.

        Only ``recovery_attempted``, ``recovery_status`` and ``recovery_details_json`` change:
        the only columns the database lets change. Returns how many rows were updated; any
        database failure raises :class:`AuditStoreError` and changes nothing.
        """
        updates = [
            {
                "b_key": report.reconciliation_id,
                "b_recovery_status": report.recovery.status.value,
                "b_recovery_details": _dumps(_recovery_details(report)),
            }
            for report in reports
            if report.recovery is not None
        ]
        if not updates:
            return 0
        self._ready()
        table = AUDIT_TABLE
        statement = (
            table.update()
            .where(table.c.reconciliation_id == bindparam("b_key"))
            .values(
                recovery_attempted=True,
                recovery_status=bindparam("b_recovery_status"),
                recovery_details_json=bindparam("b_recovery_details"),
            )
        )
        try:
            with self._engine.connect() as connection:
                connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
                with connection.begin():
                    connection.execute(statement, updates)
        except SQLAlchemyError as exc:
            reason = describe_database_error(exc)
            raise AuditStoreError(
                f"recording confirmations failed, nothing written: {reason}"
            ) from None
        return len(updates)

    def history(
        self, *, account_id: str | None = None, exchange: str | None = None, limit: int = 50
    ) -> list[Report]:
        """The ``limit`` most recent reports, newest first, optionally of one account/venue."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        query = select(ReconciliationAudit)
        if account_id is not None:
            query = query.where(ReconciliationAudit.account_id == account_id)
        if exchange is not None:
            query = query.where(ReconciliationAudit.exchange_id == exchange)
        query = query.order_by(
            ReconciliationAudit.reconciliation_timestamp.desc(), ReconciliationAudit.id.desc()
        ).limit(limit)
        return [_report_of(row) for row in self._rows(query)]

    def get(self, reconciliation_id: str) -> Report | None:
        """The report recorded under ``reconciliation_id``, if any."""
        query = select(ReconciliationAudit).where(
            ReconciliationAudit.reconciliation_id == reconciliation_id
        )
        rows = self._rows(query)
        return _report_of(rows[0]) if rows else None

    def cycle_reports(self, cycle_id: str) -> list[Report]:
        """Every report recorded for ``cycle_id``, in account order."""
        query = (
            select(ReconciliationAudit)
            .where(ReconciliationAudit.cycle_id == cycle_id)
            .order_by(ReconciliationAudit.account_id)
        )
        return [_report_of(row) for row in self._rows(query)]

    def count_for_cycle(self, cycle_id: str) -> int:
        """How many rows cycle ``cycle_id`` has."""
        query = select(func.count()).where(ReconciliationAudit.cycle_id == cycle_id)
        self._ready()
        try:
            with Session(self._engine) as session:
                return session.scalar(query) or 0
        except SQLAlchemyError as exc:
            raise AuditStoreError(f"audit read failed: {describe_database_error(exc)}") from None

    def _rows(self, query: Select[ReconciliationAudit]) -> list[ReconciliationAudit]:
        self._ready()
        try:
            with Session(self._engine) as session:
                return list(session.scalars(query))
        except SQLAlchemyError as exc:
            raise AuditStoreError(f"audit read failed: {describe_database_error(exc)}") from None


def _chain(connection: Connection, rows: _Rows, prepared: Sequence[PreparedRow]) -> _Rows:
    """The rows not recorded yet, each with its ``prev_hash`` and ``row_hash`` set.

    Runs inside the cycle's write transaction, after taking the chain lock: PostgreSQL's
    transaction-scoped advisory lock (one key for the whole table, so no lock-order deadlock);
    on SQLite the transaction's ``BEGIN IMMEDIATE`` already serialises writers. Two writers
    therefore never read the same head of an account's chain. Reports already recorded, and a
    repeat of a report within the batch, are left out: they must not advance a head.
    ``prepared[i]`` holds ``rows[i]``'s bytes, encoded before the lock was taken.
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(func.hashtext(CHAIN_LOCK_KEY))))
    keys = list(dict.fromkeys(row["reconciliation_id"] for row in rows))
    recorded = set(connection.execute(_RECORDED[dialect], {"keys": _dumps(keys)}).scalars())
    fresh: list[tuple[dict[str, Any], PreparedRow]] = []
    for row, encoded in zip(rows, prepared, strict=True):
        if row["reconciliation_id"] not in recorded:
            recorded.add(row["reconciliation_id"])
            fresh.append((row, encoded))
    accounts = sorted({row["account_id"] for row, _ in fresh})
    heads: dict[str, str | None] = {}
    if accounts:
        found = connection.execute(_HEADS[dialect], {"accounts": _dumps(accounts)}).all()
        heads.update({str(account): digest for account, digest in found})
    chained: _Rows = []
    for row, encoded in fresh:
        prev = heads.get(row["account_id"])
        digest = encoded.hash_with(prev)
        heads[row["account_id"]] = digest
        chained.append({**row, "prev_hash": prev, "row_hash": digest})
    return chained


_COPY_STATEMENT: Final = f"COPY {AUDIT_TABLE.name} ({', '.join(_INSERTED)}) FROM STDIN"


def _copy_rows(connection: Connection, rows: _Rows) -> int:
    """PostgreSQL: the cycle's new rows in one ``COPY … FROM STDIN`` of the open transaction.

    No ``ON CONFLICT`` is needed: :func:`_chain` left out every row already recorded while
    holding the chain lock that every writer takes, so no other transaction can have written
    one of these ids since. Were one there anyway, the unique index refuses the COPY and the
    whole cycle rolls back (an :class:`AuditStoreError`), never a row twice. Measured for 1,000
    rows of 50-asset balances on the 2-core machine: 29–35 ms (LZ4 columns, migration 0004),
    against 60–90 ms for one ``INSERT … SELECT FROM json_to_recordset(…)``.
    """
    raw: object = connection.connection.dbapi_connection
    if not isinstance(raw, psycopg.Connection):
        raise AuditStoreError("the PostgreSQL audit store needs the psycopg (3) driver")
    with raw.cursor() as cursor, cursor.copy(_COPY_STATEMENT) as copy:
        for row in rows:
            copy.write_row([row[name] for name in _INSERTED])
    return len(rows)


_SQLITE_INSERT: Final = (
    sqlite.insert(AUDIT_TABLE)
    .on_conflict_do_nothing(index_elements=[AUDIT_TABLE.c.reconciliation_id])
    .returning(AUDIT_TABLE.c.id)
)
"""SQLite: ``INSERT … ON CONFLICT (reconciliation_id) DO NOTHING RETURNING id`` with multi-row
VALUES, sent by SQLAlchemy's "insertmanyvalues" from a list of rows, one statement per page as
large as the 32,700-parameter limit allows (about 2,900 reports)."""

_DIALECTS: Final = ("sqlite", "postgresql")


def _row_of(report: Report) -> dict[str, Any]:
    return {
        "reconciliation_id": report.reconciliation_id,
        "cycle_id": report.cycle_id,
        "account_id": report.account_id,
        "exchange_id": report.exchange,
        "reconciliation_timestamp": report.reconciled_at,
        "status": report.status.value,
        "discrepancy_count": len(report.discrepancies),
        "local_balances_json": balances_to_json_text(report.local_balances),
        "exchange_balances_json": balances_to_json_text(report.exchange_balances),
        "discrepancies_json": _dumps([discrepancy_to_json(d) for d in report.discrepancies]),
        "error_json": None if report.error is None else _dumps(error_to_json(report.error)),
    }


def _report_of(row: ReconciliationAudit) -> Report:
    try:
        return report_from_json(
            {
                "reconciliation_id": row.reconciliation_id,
                "cycle_id": row.cycle_id,
                "account_id": row.account_id,
                "exchange": row.exchange_id,
                "reconciled_at": format_timestamp(row.reconciliation_timestamp),
                "status": row.status,
                "error": None if row.error_json is None else _loads(row.error_json),
                "local_balances": _loads(row.local_balances_json),
                "exchange_balances": _loads(row.exchange_balances_json),
                "discrepancies": _loads(row.discrepancies_json),
                "recovery": _recovery_of(row),
            }
        )
    except (SerializationError, ValueError) as exc:
        raise AuditStoreError(
            f"audit row {row.id} ({row.reconciliation_id}) is not a valid report: {exc}"
        ) from exc


def _recovery_details(report: Report) -> dict[str, Any]:
    """What the confirming re-fetch found, for ``recovery_details_json`` (status apart)."""
    recovery = recovery_to_json(report.recovery)
    assert recovery is not None
    return {key: value for key, value in recovery.items() if key != "status"}


def _recovery_of(row: ReconciliationAudit) -> dict[str, Any] | None:
    if not row.recovery_attempted or row.recovery_status is None:
        return None
    details = _loads(row.recovery_details_json) if row.recovery_details_json else {}
    if not isinstance(details, dict):
        raise SerializationError("recovery details must be an object")
    return {**details, "status": row.recovery_status}


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(text: str) -> Any:
    # Amounts are stored as strings; numbers, were any there, must still never become floats.
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


__all__ = ["AuditRepository", "AuditStoreError"]
