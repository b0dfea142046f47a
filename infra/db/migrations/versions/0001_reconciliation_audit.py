"""The append-only audit table ``reconciliation_audit`` (DESIGN §5).

The database itself refuses any change to a recorded fact and any DELETE (and TRUNCATE on
PostgreSQL): only the recovery columns and ``operator_notes`` may be updated. SQLite refuses
any UPDATE that names a fact column (even ``SET status = status``); PostgreSQL refuses any UPDATE
that changes one. The triggers guard against the application and its users, not the table's
owner, who can drop them: production should write as a role that does not own the table.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE: Final = "reconciliation_audit"

#: Every column except recovery_attempted, recovery_status, recovery_details_json and
#: operator_notes: what a report recorded, frozen at INSERT. (Frozen here on purpose: a later
#: revision that adds a fact column redefines the triggers instead of editing this list.)
FACT_COLUMNS: Final = (
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

REFUSAL: Final = "reconciliation_audit is append-only"

_SQLITE_TRIGGERS: Final = {
    "reconciliation_audit_refuse_update": f"""
        CREATE TRIGGER reconciliation_audit_refuse_update
        BEFORE UPDATE OF {", ".join(FACT_COLUMNS)} ON {TABLE}
        BEGIN
            SELECT RAISE(ABORT, '{REFUSAL}: recorded facts cannot be updated');
        END
    """,
    "reconciliation_audit_refuse_delete": f"""
        CREATE TRIGGER reconciliation_audit_refuse_delete
        BEFORE DELETE ON {TABLE}
        BEGIN
            SELECT RAISE(ABORT, '{REFUSAL}: rows cannot be deleted');
        END
    """,
}

_PG_FUNCTION: Final = "reconciliation_audit_refuse_change"

# restrict_violation (23001) makes every refusal an IntegrityError, as SQLite's RAISE(ABORT) is.
_PG_FUNCTION_SQL: Final = f"""
    CREATE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            IF ({", ".join(f"OLD.{c}" for c in FACT_COLUMNS)})
               IS NOT DISTINCT FROM ({", ".join(f"NEW.{c}" for c in FACT_COLUMNS)}) THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION '{REFUSAL}: recorded facts cannot be updated'
                USING ERRCODE = 'restrict_violation';
        END IF;
        RAISE EXCEPTION '{REFUSAL}: % refused', TG_OP USING ERRCODE = 'restrict_violation';
    END
    $$
"""

_PG_TRIGGERS: Final = {
    "reconciliation_audit_refuse_update": "BEFORE UPDATE ON {table} FOR EACH ROW",
    "reconciliation_audit_refuse_delete": "BEFORE DELETE ON {table} FOR EACH ROW",
    "reconciliation_audit_refuse_truncate": "BEFORE TRUNCATE ON {table} FOR EACH STATEMENT",
}


def _dialect() -> str:
    """The dialect's name; the append-only triggers exist for SQLite and PostgreSQL only."""
    name = op.get_bind().dialect.name
    if name not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"no append-only triggers for the {name} dialect")
    return name


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("reconciliation_id", sa.String(128), nullable=False),
        sa.Column("cycle_id", sa.String(128), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("exchange_id", sa.String(64), nullable=False),
        sa.Column("reconciliation_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("discrepancy_count", sa.Integer(), nullable=False),
        sa.Column("local_balances_json", sa.Text(), nullable=False),
        sa.Column("exchange_balances_json", sa.Text(), nullable=False),
        sa.Column("discrepancies_json", sa.Text(), nullable=False),
        sa.Column("error_json", sa.Text(), nullable=True),
        sa.Column("recovery_attempted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("recovery_status", sa.String(16), nullable=True),
        sa.Column("recovery_details_json", sa.Text(), nullable=True),
        sa.Column("operator_notes", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_reconciliation_audit"),
        sa.UniqueConstraint("reconciliation_id", name="uq_reconciliation_audit_reconciliation_id"),
        sa.UniqueConstraint(
            "cycle_id", "account_id", name="uq_reconciliation_audit_cycle_id_account_id"
        ),
        sa.CheckConstraint(
            "status IN ('SUCCESS', 'WARNING', 'ERROR', 'CRITICAL')",
            name=op.f("ck_reconciliation_audit_status"),
        ),
        sa.CheckConstraint(
            "discrepancy_count >= 0", name=op.f("ck_reconciliation_audit_discrepancy_count")
        ),
    )
    op.create_index(
        "ix_reconciliation_audit_exchange_id_reconciliation_timestamp",
        TABLE,
        ["exchange_id", "reconciliation_timestamp"],
    )
    op.create_index(
        "ix_reconciliation_audit_account_id_reconciliation_timestamp",
        TABLE,
        ["account_id", "reconciliation_timestamp"],
    )
    op.create_index("ix_reconciliation_audit_status", TABLE, ["status"])

    dialect = _dialect()
    if dialect == "postgresql":
        op.execute(_PG_FUNCTION_SQL)
        for name, timing in _PG_TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER {name} {timing.format(table=TABLE)} "
                f"EXECUTE FUNCTION {_PG_FUNCTION}()"
            )
    else:
        for sql in _SQLITE_TRIGGERS.values():
            op.execute(sql)


def downgrade() -> None:
    if _dialect() == "postgresql":
        for name in _PG_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {TABLE}")
        op.execute(f"DROP FUNCTION IF EXISTS {_PG_FUNCTION}()")
    else:
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table(TABLE)
