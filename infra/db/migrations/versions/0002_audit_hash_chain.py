"""The audit hash chain: ``row_hash`` and ``prev_hash`` on ``reconciliation_audit``, and an
index on ``(account_id, id)`` to find each account's latest row.

Both columns are facts: the append-only triggers are redefined to cover them (SQLite: the
UPDATE trigger is recreated with the longer column list; PostgreSQL: the trigger function is
replaced). Rows written before this revision are chained here, per account in ``id`` order,
before the triggers freeze the new columns. Downgrade restores the 0001 triggers, then drops
the columns.

The columns are nullable in the schema (SQLite cannot add a NOT NULL column without a default);
``recon audit verify`` reports a row without a ``row_hash`` as a problem.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE: Final = "reconciliation_audit"
REFUSAL: Final = "reconciliation_audit is append-only"

#: The fact columns of revision 0001 (frozen copy; see 0001's FACT_COLUMNS).
FACT_COLUMNS_0001: Final = (
    "id",
    "reconciliation_id",
    "cycle_id",
    "account_id",
    "exchange_id",
    "reconciliation_timestamp",
    "created_at",
    "status",
    "discrepancy_count",
    "local_balances_json",
    "exchange_balances_json",
    "discrepancies_json",
    "error_json",
)
FACT_COLUMNS: Final = (*FACT_COLUMNS_0001, "row_hash", "prev_hash")

#: What a row's hash covers (frozen copy of infra.db.chain.HASHED_COLUMNS at this revision).
_HASHED: Final = (
    "reconciliation_id",
    "cycle_id",
    "account_id",
    "exchange_id",
    "reconciliation_timestamp",
    "status",
    "discrepancy_count",
    "local_balances_json",
    "exchange_balances_json",
    "discrepancies_json",
    "error_json",
)

_HEAD_INDEX: Final = "ix_reconciliation_audit_account_id_id"
_UPDATE_TRIGGER: Final = "reconciliation_audit_refuse_update"
_PG_FUNCTION: Final = "reconciliation_audit_refuse_change"


def _sqlite_update_trigger(columns: Sequence[str]) -> str:
    return f"""
        CREATE TRIGGER {_UPDATE_TRIGGER}
        BEFORE UPDATE OF {", ".join(columns)} ON {TABLE}
        BEGIN
            SELECT RAISE(ABORT, '{REFUSAL}: recorded facts cannot be updated');
        END
    """


def _pg_function(columns: Sequence[str]) -> str:
    return f"""
        CREATE OR REPLACE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' THEN
                IF ({", ".join(f"OLD.{c}" for c in columns)})
                   IS NOT DISTINCT FROM ({", ".join(f"NEW.{c}" for c in columns)}) THEN
                    RETURN NEW;
                END IF;
                RAISE EXCEPTION '{REFUSAL}: recorded facts cannot be updated'
                    USING ERRCODE = 'restrict_violation';
            END IF;
            RAISE EXCEPTION '{REFUSAL}: % refused', TG_OP USING ERRCODE = 'restrict_violation';
        END
        $$
    """


def _dialect() -> str:
    name = op.get_bind().dialect.name
    if name not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"no append-only triggers for the {name} dialect")
    return name


def _hash(row: sa.Row[tuple[object, ...]], prev_hash: str | None) -> str:
    facts = dict(row._mapping)
    moment = facts["reconciliation_timestamp"]
    if isinstance(moment, str):  # SQLite without the model's type: naive UTC text
        moment = datetime.fromisoformat(moment)
    assert isinstance(moment, datetime)
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    document: dict[str, object] = {name: facts[name] for name in _HASHED}
    document["reconciliation_timestamp"] = (
        moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    )
    document["prev_hash"] = prev_hash
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _chain_existing_rows() -> None:
    table = sa.table(
        TABLE,
        sa.column("id", sa.BigInteger()),
        *(sa.column(name) for name in _HASHED if name != "reconciliation_timestamp"),
        sa.column("reconciliation_timestamp", sa.DateTime(timezone=True)),
        sa.column("row_hash", sa.String(64)),
        sa.column("prev_hash", sa.String(64)),
    )
    bind = op.get_bind()
    query = sa.select(table).order_by(table.c.account_id, table.c.id)
    heads: dict[str, str] = {}
    for row in bind.execute(query).all():
        prev = heads.get(row.account_id)
        digest = _hash(row, prev)
        heads[row.account_id] = digest
        bind.execute(
            table.update().where(table.c.id == row.id).values(row_hash=digest, prev_hash=prev)
        )


def upgrade() -> None:
    dialect = _dialect()
    op.add_column(TABLE, sa.Column("row_hash", sa.String(64), nullable=True))
    op.add_column(TABLE, sa.Column("prev_hash", sa.String(64), nullable=True))
    # Each account's head (its latest row) is found by a seek on this index.
    op.create_index(_HEAD_INDEX, TABLE, ["account_id", "id"])
    # The 0001 triggers do not cover the new columns yet: existing rows can be chained.
    _chain_existing_rows()
    if dialect == "postgresql":
        op.execute(_pg_function(FACT_COLUMNS))
    else:
        op.execute(f"DROP TRIGGER {_UPDATE_TRIGGER}")
        op.execute(_sqlite_update_trigger(FACT_COLUMNS))


def downgrade() -> None:
    if _dialect() == "postgresql":
        op.execute(_pg_function(FACT_COLUMNS_0001))
    else:
        op.execute(f"DROP TRIGGER {_UPDATE_TRIGGER}")
        op.execute(_sqlite_update_trigger(FACT_COLUMNS_0001))
    op.drop_index(_HEAD_INDEX, TABLE)
    op.drop_column(TABLE, "prev_hash")
    op.drop_column(TABLE, "row_hash")
