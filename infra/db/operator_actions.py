"""The operator actions log (DESIGN §5): append-only rows of ``operator_actions``.

:meth:`OperatorActionLog.record` appends one row per operator action attempted (refused and
failed ones too); :meth:`OperatorActionLog.history` reads the latest rows, newest first. The
table is created by migration 0003; the database refuses UPDATE and DELETE on it. A row never
holds a token or a balance amount.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy import Engine, RowMapping
from sqlalchemy.exc import SQLAlchemyError

from infra.db.engine import SQLITE_BEGIN_OPTION
from infra.db.errors import AuditStoreError, describe_database_error
from infra.db.models import OPERATOR_ACTIONS_TABLE

_TABLE: Final = OPERATOR_ACTIONS_TABLE


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """One recorded operator action."""

    id: int
    operator: str
    action: str
    account_id: str
    reason: str
    outcome: str
    at: datetime
    detail: Mapping[str, object] | None


class OperatorActionLog:
    """The ``operator_actions`` table of the audit store behind ``engine`` (schema at head)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(
        self,
        *,
        operator: str,
        action: str,
        account_id: str,
        reason: str,
        outcome: str,
        at: datetime,
        detail: Mapping[str, object] | None = None,
    ) -> int:
        """Append one action; returns its row id. Raises :class:`AuditStoreError` on failure."""
        if at.tzinfo is None:
            raise ValueError("at must be timezone-aware")
        detail_json = (
            None
            if detail is None
            else json.dumps(dict(detail), sort_keys=True, separators=(",", ":"), allow_nan=False)
        )
        values = {
            "operator": operator,
            "action": action,
            "account_id": account_id,
            "reason": reason,
            "outcome": outcome,
            "at": at,
            "detail_json": detail_json,
        }
        sqlite = self._engine.dialect.name == "sqlite"
        options = {SQLITE_BEGIN_OPTION: "IMMEDIATE"} if sqlite else {}
        try:
            with (
                self._engine.connect().execution_options(**options) as connection,
                connection.begin(),
            ):
                result = connection.execute(_TABLE.insert().values(**values))
                key = result.inserted_primary_key
        except SQLAlchemyError as exc:
            raise AuditStoreError(
                f"cannot record the {action} action on account {account_id!r}: "
                f"{describe_database_error(exc)}"
            ) from None
        return int(key[0]) if key is not None else 0

    def history(self, limit: int = 50) -> list[OperatorAction]:
        """The latest ``limit`` actions, newest first."""
        if limit <= 0:
            raise ValueError("limit must be positive")
        query = sa.select(_TABLE).order_by(_TABLE.c.id.desc()).limit(limit)
        try:
            with self._engine.connect() as connection:
                rows = connection.execute(query).all()
        except SQLAlchemyError as exc:
            raise AuditStoreError(
                f"cannot read the operator actions: {describe_database_error(exc)}"
            ) from None
        return [_action(row._mapping) for row in rows]


def _action(row: RowMapping) -> OperatorAction:
    at = row["at"]
    assert isinstance(at, datetime)
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    detail_json = row["detail_json"]
    detail = json.loads(detail_json) if isinstance(detail_json, str) else None
    return OperatorAction(
        id=int(str(row["id"])),
        operator=str(row["operator"]),
        action=str(row["action"]),
        account_id=str(row["account_id"]),
        reason=str(row["reason"]),
        outcome=str(row["outcome"]),
        at=at,
        detail=detail,
    )


__all__ = ["OperatorAction", "OperatorActionLog"]
