"""The operator actions log (DESIGN §5, Operator actions): the append-only ``operator_actions``
table, one row per operator action attempted (``sync`` included when refused or failed).

A row says who (``operator``), what (``action``), on which account, why (``reason``), how it
ended (``outcome``: ``synced``, ``refused``, ``failed`` …), when (``at``) and optional detail
(``detail_json``, never an amount and never a token). The database refuses UPDATE and DELETE
(and TRUNCATE on PostgreSQL), following the style of revision 0001.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE: Final = "operator_actions"
REFUSAL: Final = "operator_actions is append-only"

_SQLITE_TRIGGERS: Final = {
    "operator_actions_refuse_update": f"""
        CREATE TRIGGER operator_actions_refuse_update
        BEFORE UPDATE ON {TABLE}
        BEGIN
            SELECT RAISE(ABORT, '{REFUSAL}: rows cannot be updated');
        END
    """,
    "operator_actions_refuse_delete": f"""
        CREATE TRIGGER operator_actions_refuse_delete
        BEFORE DELETE ON {TABLE}
        BEGIN
            SELECT RAISE(ABORT, '{REFUSAL}: rows cannot be deleted');
        END
    """,
}

_PG_FUNCTION: Final = "operator_actions_refuse_change"

# restrict_violation (23001) makes every refusal an IntegrityError, as SQLite's RAISE(ABORT) is.
_PG_FUNCTION_SQL: Final = f"""
    CREATE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{REFUSAL}: % refused', TG_OP USING ERRCODE = 'restrict_violation';
    END
    $$
"""

_PG_TRIGGERS: Final = {
    "operator_actions_refuse_update": "BEFORE UPDATE ON {table} FOR EACH ROW",
    "operator_actions_refuse_delete": "BEFORE DELETE ON {table} FOR EACH ROW",
    "operator_actions_refuse_truncate": "BEFORE TRUNCATE ON {table} FOR EACH STATEMENT",
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
        sa.Column("operator", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail_json", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_operator_actions"),
    )
    op.create_index("ix_operator_actions_account_id_id", TABLE, ["account_id", "id"])
    if _dialect() == "postgresql":
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
    op.drop_index("ix_operator_actions_account_id_id", TABLE)
    op.drop_table(TABLE)
