"""The audit table ``reconciliation_audit`` (DESIGN §5) as SQLAlchemy 2 declarative models.

One row per (account, cycle). Amounts live in the ``*_json`` text columns as the canonical
decimal strings of :mod:`domain.serialization`: text, not a JSON type, so the database never
rewrites them. The schema itself (with the triggers that make rows append-only) is created by
the Alembic migrations beside this module, not by ``metadata.create_all``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from domain.report import Status

#: Constraint and index names the migrations can rely on, on every dialect.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: The only columns the database lets change once a row is written.
MUTABLE_COLUMNS: Final = frozenset(
    {"recovery_attempted", "recovery_status", "recovery_details_json", "operator_notes"}
)


_STATUS_VALUES: Final = ", ".join(f"'{status.value}'" for status in Status)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp stored in UTC and always read back aware, in UTC.

    SQLite keeps no zone: values are written as UTC wall time and read back as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type[datetime]:
        return datetime

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("audit timestamps must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the audit store's tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ReconciliationAudit(Base):
    """One account's report in one cycle; the facts never change after the INSERT."""

    __tablename__ = "reconciliation_audit"
    __table_args__ = (
        UniqueConstraint("cycle_id", "account_id"),
        CheckConstraint(f"status IN ({_STATUS_VALUES})", name="status"),
        CheckConstraint("discrepancy_count >= 0", name="discrepancy_count"),
        Index(None, "exchange_id", "reconciliation_timestamp"),
        Index(None, "account_id", "reconciliation_timestamp"),
        Index(None, "account_id", "id"),
        Index(None, "status"),
    )

    # SQLite only autoincrements an INTEGER PRIMARY KEY.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    reconciliation_id: Mapped[str] = mapped_column(String(128), unique=True)
    cycle_id: Mapped[str] = mapped_column(String(128))
    account_id: Mapped[str] = mapped_column(String(128))
    exchange_id: Mapped[str] = mapped_column(String(64))
    reconciliation_timestamp: Mapped[datetime] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())
    status: Mapped[str] = mapped_column(String(16))
    discrepancy_count: Mapped[int] = mapped_column(Integer)
    local_balances_json: Mapped[str] = mapped_column(Text)
    exchange_balances_json: Mapped[str] = mapped_column(Text)
    discrepancies_json: Mapped[str] = mapped_column(Text)
    error_json: Mapped[str | None] = mapped_column(Text)
    #: The audit chain (:mod:`infra.db.chain`); facts too, frozen at INSERT.
    row_hash: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    recovery_attempted: Mapped[bool] = mapped_column(Boolean, server_default=false())
    recovery_status: Mapped[str | None] = mapped_column(String(16))
    recovery_details_json: Mapped[str | None] = mapped_column(Text)
    operator_notes: Mapped[str | None] = mapped_column(Text)


#: The table itself, for Core statements.
AUDIT_TABLE: Final = Base.metadata.tables[ReconciliationAudit.__tablename__]


class OperatorActionRecord(Base):
    """One operator action attempted (DESIGN §5, Operator actions; migration 0003).

    Append-only: the database refuses UPDATE and DELETE. Never a token, never an amount.
    """

    __tablename__ = "operator_actions"
    __table_args__ = (Index(None, "account_id", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    operator: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    account_id: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    detail_json: Mapped[str | None] = mapped_column(Text)


#: The ``operator_actions`` table, for Core statements.
OPERATOR_ACTIONS_TABLE: Final = Base.metadata.tables[OperatorActionRecord.__tablename__]

__all__ = [
    "AUDIT_TABLE",
    "MUTABLE_COLUMNS",
    "OPERATOR_ACTIONS_TABLE",
    "Base",
    "OperatorActionRecord",
    "ReconciliationAudit",
    "UtcDateTime",
]
