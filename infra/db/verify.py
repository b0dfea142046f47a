"""Verification of the audit store (DESIGN §5, Audit chain; §6 ``recon audit verify``).

:func:`verify_audit` reports every problem it finds, never stopping at the first:

- ``tampered``: a row whose recorded facts no longer hash to its own ``row_hash`` (or that has
  none), named by ``id`` and ``reconciliation_id``;
- ``broken_link``: a row whose ``prev_hash`` is not the ``row_hash`` of the previous row (by
  ``id``) of its account — a row deleted, inserted or re-hashed before it;
- ``update_accepted`` / ``delete_accepted``: the database no longer refuses an UPDATE of a fact
  column or a DELETE — of ``reconciliation_audit`` or of the operator actions log
  (``operator_actions``, DESIGN §5). This is tried for real on one row of each table, inside a
  transaction that is always rolled back (each attempt in its own SAVEPOINT). On an empty table
  a probe row is inserted in that same rolled-back transaction first, so the refusal is checked
  on every database.

Limits: deleting an account's latest rows leaves no broken link (nothing points at them); only
an external copy of the heads can reveal that. TRUNCATE is not probed (its lock would stall the
writers). Messages carry ids, never an amount.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import Connection, Engine, Executable, delete, insert, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from infra.db.chain import HASHED_COLUMNS, row_hash
from infra.db.errors import AuditStoreError, describe_database_error
from infra.db.models import AUDIT_TABLE, OPERATOR_ACTIONS_TABLE

#: The ``reconciliation_id`` of the probe row inserted (and rolled back) on an empty table.
PROBE_RECONCILIATION_ID: Final = "recon-audit-verify-probe"


class ProblemKind(enum.StrEnum):
    """What is wrong."""

    TAMPERED = "tampered"
    BROKEN_LINK = "broken_link"
    UPDATE_ACCEPTED = "update_accepted"
    DELETE_ACCEPTED = "delete_accepted"


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found; ``row_id``/``reconciliation_id`` name the row concerned, if any."""

    kind: ProblemKind
    message: str
    row_id: int | None = None
    reconciliation_id: str | None = None

    def __str__(self) -> str:
        if self.row_id is None:
            return f"{self.kind.value}: {self.message}"
        return f"row {self.row_id} ({self.reconciliation_id}): {self.kind.value}: {self.message}"


def verify_audit(engine: Engine) -> list[Problem]:
    """Every problem of the audit chain and of the table's refusal of UPDATE/DELETE.

    Chain problems come first, in ``id`` order; then the refusal problems. Raises
    :class:`AuditStoreError` when the database cannot be read.
    """
    try:
        with engine.connect() as connection:
            problems = _chain_problems(connection)
            connection.rollback()
            problems.extend(_refusal_problems(connection))
            problems.extend(_operator_log_refusal_problems(connection))
    except SQLAlchemyError as exc:
        raise AuditStoreError(
            f"audit verification failed: {describe_database_error(exc)}"
        ) from None
    return problems


def _chain_problems(connection: Connection) -> list[Problem]:
    table = AUDIT_TABLE
    columns = [table.c.id, *(table.c[name] for name in HASHED_COLUMNS)]
    query = select(*columns, table.c.row_hash, table.c.prev_hash).order_by(
        table.c.account_id, table.c.id
    )
    problems: list[Problem] = []
    heads: dict[str, str | None] = {}
    for row in connection.execute(query).mappings():
        row_id, key = int(row["id"]), str(row["reconciliation_id"])
        expected = row_hash(dict(row), row["prev_hash"])
        if row["row_hash"] is None:
            problems.append(Problem(ProblemKind.TAMPERED, "row has no row_hash", row_id, key))
        elif row["row_hash"] != expected:
            problems.append(
                Problem(ProblemKind.TAMPERED, "recorded facts do not match row_hash", row_id, key)
            )
        account = str(row["account_id"])
        previous = heads.get(account)
        if (row["prev_hash"] or None) != previous:
            what = (
                "the account's previous row"
                if account in heads
                else "nothing (first row of its account)"
            )
            problems.append(
                Problem(
                    ProblemKind.BROKEN_LINK,
                    f"prev_hash does not match the row_hash of {what}",
                    row_id,
                    key,
                )
            )
        heads[account] = row["row_hash"]
    problems.sort(key=lambda problem: problem.row_id or 0)
    return problems


def _refusal_problems(connection: Connection) -> list[Problem]:
    table = AUDIT_TABLE
    problems: list[Problem] = []
    with connection.begin() as transaction:
        try:
            target = connection.execute(
                select(table.c.id, table.c.reconciliation_id, table.c.status)
                .order_by(table.c.id)
                .limit(1)
            ).first()
            if target is None:
                connection.execute(insert(table).values(_probe_row()))
                target = connection.execute(
                    select(table.c.id, table.c.reconciliation_id, table.c.status).where(
                        table.c.reconciliation_id == PROBE_RECONCILIATION_ID
                    )
                ).one()
            row_id, key = int(target.id), str(target.reconciliation_id)
            other = "ERROR" if target.status != "ERROR" else "SUCCESS"
            attempts = (
                (
                    ProblemKind.UPDATE_ACCEPTED,
                    update(table).where(table.c.id == row_id).values(status=other),
                    "the database accepted an UPDATE of a recorded fact (status)",
                ),
                (
                    ProblemKind.DELETE_ACCEPTED,
                    delete(table).where(table.c.id == row_id),
                    "the database accepted a DELETE of an audit row",
                ),
            )
            problems.extend(
                Problem(kind, f"{message}, then rolled back", row_id, key)
                for kind, message in _accepted(connection, attempts)
            )
        finally:
            transaction.rollback()
    return problems


def _operator_log_refusal_problems(connection: Connection) -> list[Problem]:
    """The operator actions log must refuse UPDATE and DELETE as the audit table does; its rows
    are named by ``id`` in the message (they have no reconciliation id)."""
    table = OPERATOR_ACTIONS_TABLE
    problems: list[Problem] = []
    with connection.begin() as transaction:
        try:
            row_id = connection.execute(select(table.c.id).order_by(table.c.id).limit(1)).scalar()
            if row_id is None:
                row_id = connection.execute(
                    insert(table).values(_operator_probe_row()).returning(table.c.id)
                ).scalar_one()
            attempts = (
                (
                    ProblemKind.UPDATE_ACCEPTED,
                    update(table).where(table.c.id == row_id).values(outcome="tampered"),
                    "UPDATE",
                ),
                (ProblemKind.DELETE_ACCEPTED, delete(table).where(table.c.id == row_id), "DELETE"),
            )
            problems.extend(
                Problem(
                    kind,
                    f"the database accepted a {verb} of operator_actions row {row_id}, "
                    "then rolled back",
                )
                for kind, verb in _accepted(connection, attempts)
            )
        finally:
            transaction.rollback()
    return problems


def _accepted(
    connection: Connection, attempts: Sequence[tuple[ProblemKind, Executable, str]]
) -> list[tuple[ProblemKind, str]]:
    """Try each statement in its own SAVEPOINT, always rolled back; ``(kind, label)`` of each
    one the database accepted (changed a row) instead of refusing."""
    accepted: list[tuple[ProblemKind, str]] = []
    for kind, statement, label in attempts:
        try:
            with connection.begin_nested() as savepoint:
                changed = connection.execute(statement).rowcount
                savepoint.rollback()
        except DBAPIError:
            continue  # refused: a trigger, a missing privilege — either way, refused
        if changed:
            accepted.append((kind, label))
    return accepted


def _operator_probe_row() -> dict[str, object]:
    return {
        "operator": "recon-audit-verify",
        "action": "probe",
        "account_id": PROBE_RECONCILIATION_ID,
        "reason": "refusal probe, rolled back",
        "outcome": "probe",
        "at": datetime(1970, 1, 1, tzinfo=UTC),
        "detail_json": None,
    }


def _probe_row() -> dict[str, object]:
    moment = datetime(1970, 1, 1, tzinfo=UTC)
    facts: dict[str, object] = {
        "reconciliation_id": PROBE_RECONCILIATION_ID,
        "cycle_id": PROBE_RECONCILIATION_ID,
        "account_id": PROBE_RECONCILIATION_ID,
        "exchange_id": "probe",
        "reconciliation_timestamp": moment,
        "status": "SUCCESS",
        "discrepancy_count": 0,
        "local_balances_json": "{}",
        "exchange_balances_json": "{}",
        "discrepancies_json": "[]",
        "error_json": None,
    }
    return {**facts, "prev_hash": None, "row_hash": row_hash(facts, None)}


__all__ = ["PROBE_RECONCILIATION_ID", "Problem", "ProblemKind", "verify_audit"]
