"""The authorised balance sync (DESIGN §5, Operator actions; §6 ``recon sync`` and the
``recon.sync_balances`` task): write one account's venue balances into the book.

Order, each step ending the attempt when it fails:

1. authorise — the operator's token must match the one bound to that operator name
   (``hmac.compare_digest``; an unknown operator is compared against a dummy so both take the
   same time). Refused: ``{"outcome": "refused", "reason": "not authorised"}``.
2. a non-empty reason is required (refused, ``"reason required"``).
3. the book must be writable (http, or sql with ``upsert``; refused, ``"book not writable"``).
4. fetch the venue's balances with the cycle's retries; a failure is
   ``{"outcome": "failed", "error": {"kind", "message"}}`` and the book is untouched.
5. write them into the book; ``{"outcome": "synced", "assets": N}`` (a failed write is
   ``failed`` too).

Every attempt, allowed or refused, is one row of ``operator_actions``. Neither the token nor
any amount appears in an outcome, a row or a log line.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Final, Protocol, runtime_checkable

from pydantic import SecretStr

from app.cycle import AccountPlan, fetch_venue
from domain.report import FetchError, SourceError
from infra.venues.retry import RetryPolicy

logger = logging.getLogger(__name__)

#: The ``action`` column of a sync's row.
ACTION: Final = "sync"
NOT_AUTHORISED: Final = "not authorised"
REASON_REQUIRED: Final = "reason required"
NOT_WRITABLE: Final = "book not writable"

_DUMMY: Final = b"\x00" * 32


class ActionLog(Protocol):
    """Where attempts are recorded (:class:`infra.db.operator_actions.OperatorActionLog`)."""

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
    ) -> int: ...


@runtime_checkable
class PutBook(Protocol):
    """A book written by ``PUT`` (:class:`infra.book.http_book.HttpBook`)."""

    def put_balances(
        self, account_id: str, balances: Mapping[str, Decimal], as_of: datetime
    ) -> None: ...


@runtime_checkable
class UpsertBook(Protocol):
    """A book written by an upsert statement (:class:`infra.book.sql_book.SqlBook`)."""

    @property
    def writable(self) -> bool: ...

    def upsert_balances(self, account_id: str, balances: Mapping[str, Decimal]) -> None: ...


def authorised(operator: str, token: str, tokens: Mapping[str, SecretStr]) -> bool:
    """Whether ``token`` is the one bound to ``operator`` (constant-time comparison)."""
    bound = tokens.get(operator)
    expected = _DUMMY if bound is None else bound.get_secret_value().encode("utf-8")
    matches = hmac.compare_digest(token.encode("utf-8"), expected)
    return bound is not None and bool(token) and matches


def _writer(book: object) -> Callable[[str, Mapping[str, Decimal], datetime], None] | None:
    if isinstance(book, PutBook):
        return book.put_balances
    if isinstance(book, UpsertBook) and book.writable:
        upsert = book.upsert_balances
        return lambda account_id, balances, _as_of: upsert(account_id, balances)
    return None


def sync_balances(
    *,
    account_id: str,
    operator: str,
    token: str,
    reason: str,
    tokens: Mapping[str, SecretStr],
    plan: AccountPlan,
    book: object,
    log: ActionLog,
    retry: RetryPolicy,
    clock: Callable[[], datetime],
) -> dict[str, object]:
    """One sync attempt for ``account_id`` (whose venue is ``plan``); returns its outcome."""

    def finish(
        outcome: dict[str, object], detail: Mapping[str, object] | None
    ) -> dict[str, object]:
        log.record(
            operator=operator,
            action=ACTION,
            account_id=account_id,
            reason=reason,
            outcome=str(outcome["outcome"]),
            at=clock(),
            detail=detail,
        )
        logger.info(
            "operator action: action=%s operator=%s account=%s outcome=%s",
            ACTION,
            operator,
            account_id,
            outcome["outcome"],
        )
        return outcome

    if not authorised(operator, token, tokens):
        return finish(_refused(NOT_AUTHORISED), {"reason": NOT_AUTHORISED})
    if not reason.strip():
        return finish(_refused(REASON_REQUIRED), {"reason": REASON_REQUIRED})
    write = _writer(book)
    if write is None:
        return finish(_refused(NOT_WRITABLE), {"reason": NOT_WRITABLE})
    fetched = fetch_venue(plan, retry)
    if isinstance(fetched, FetchError):
        error = {"kind": fetched.kind.value, "message": fetched.message}
        return finish({"outcome": "failed", "error": error}, {"error": error})
    try:
        write(account_id, fetched, clock())
    except SourceError as exc:
        error = {"kind": exc.kind.value, "message": exc.message}
        return finish({"outcome": "failed", "error": error}, {"error": error})
    return finish({"outcome": "synced", "assets": len(fetched)}, {"assets": len(fetched)})


def _refused(why: str) -> dict[str, object]:
    return {"outcome": "refused", "reason": why}


__all__ = [
    "ACTION",
    "NOT_AUTHORISED",
    "NOT_WRITABLE",
    "REASON_REQUIRED",
    "ActionLog",
    "authorised",
    "sync_balances",
]
