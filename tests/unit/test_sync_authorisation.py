"""The authorised balance sync: authorisation first, refusals recorded, book untouched."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from app.cycle import AccountPlan
from app.sync import sync_balances
from infra.venues.errors import VenueAuthError
from infra.venues.retry import RetryPolicy

T0 = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)
TOKENS = {"alice": SecretStr("tok-alice"), "bob": SecretStr("tok-bob")}
SECRET_AMOUNT = Decimal("1234.5678")


class Venue:
    """A venue client counting its fetches."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls = 0
        self.error = error

    def fetch_balances(self) -> dict[str, Decimal]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return {"BTC": SECRET_AMOUNT, "USD": Decimal("10")}


@dataclass
class PutBook:
    """A writable book remembering every PUT."""

    puts: list[tuple[str, dict[str, Decimal], datetime]] = field(default_factory=list)

    def balances(self, account_id: str) -> dict[str, Decimal]:
        return {}

    def put_balances(
        self, account_id: str, balances: Mapping[str, Decimal], as_of: datetime
    ) -> None:
        self.puts.append((account_id, dict(balances), as_of))


class ReadOnlyBook:
    """A book that cannot be written (like a FileBook)."""

    def balances(self, account_id: str) -> dict[str, Decimal]:
        return {}


@dataclass
class Log:
    """An in-memory operator action log."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def record(self, **row: Any) -> int:
        self.rows.append(row)
        return len(self.rows)


def _sync(
    *,
    operator: str = "alice",
    token: str = "tok-alice",
    reason: str = "book drifted",
    book: object | None = None,
    venue: Venue | None = None,
    log: Log | None = None,
) -> tuple[dict[str, object], Venue, object, Log]:
    venue = venue or Venue()
    book = PutBook() if book is None else book
    log = log or Log()
    outcome = sync_balances(
        account_id="acct-1",
        operator=operator,
        token=token,
        reason=reason,
        tokens=TOKENS,
        plan=AccountPlan(account_id="acct-1", exchange="coinbase", client=venue),
        book=book,
        log=log,
        retry=RetryPolicy(retries=0),
        clock=lambda: T0,
    )
    return outcome, venue, book, log


def test_right_token_syncs_and_records() -> None:
    """The operator's own token syncs: the book gets the venue's balances, one row says synced."""
    outcome, venue, book, log = _sync()
    assert outcome == {"outcome": "synced", "assets": 2}
    assert isinstance(book, PutBook)
    assert book.puts == [("acct-1", {"BTC": SECRET_AMOUNT, "USD": Decimal("10")}, T0)]
    assert venue.calls == 1
    assert [r["outcome"] for r in log.rows] == ["synced"]
    assert log.rows[0]["operator"] == "alice"
    assert log.rows[0]["action"] == "sync"
    assert "1234" not in repr(log.rows)
    assert "tok-alice" not in repr(log.rows)


@pytest.mark.parametrize(
    ("operator", "token"),
    [
        ("alice", "tok-bob"),  # another operator's token
        ("alice", "wrong"),
        ("alice", ""),
        ("mallory", "tok-alice"),  # unknown operator
        ("mallory", ""),
    ],
)
def test_wrong_token_or_unknown_operator_is_refused(operator: str, token: str) -> None:
    """A token not bound to that operator name is refused: nothing fetched or written, recorded."""
    outcome, venue, book, log = _sync(operator=operator, token=token)
    assert outcome == {"outcome": "refused", "reason": "not authorised"}
    assert venue.calls == 0
    assert isinstance(book, PutBook)
    assert book.puts == []
    assert [(r["operator"], r["outcome"]) for r in log.rows] == [(operator, "refused")]
    assert token == "" or token not in repr(log.rows)


@pytest.mark.parametrize("reason", ["", "   "])
def test_empty_reason_is_refused(reason: str) -> None:
    """An authorised sync without a reason is refused and recorded; the book is untouched."""
    outcome, venue, book, log = _sync(reason=reason)
    assert outcome == {"outcome": "refused", "reason": "reason required"}
    assert venue.calls == 0
    assert isinstance(book, PutBook)
    assert book.puts == []
    assert [r["outcome"] for r in log.rows] == ["refused"]


def test_book_not_writable_is_refused() -> None:
    """A book without a writer (file book, sql without upsert) refuses the sync, recorded."""
    outcome, venue, _book, log = _sync(book=ReadOnlyBook())
    assert outcome == {"outcome": "refused", "reason": "book not writable"}
    assert venue.calls == 0
    assert [r["outcome"] for r in log.rows] == ["refused"]


def test_failed_fetch_leaves_the_book_untouched() -> None:
    """A venue that cannot be read ends as failed with its kind; nothing is written."""
    outcome, _venue, book, log = _sync(venue=Venue(VenueAuthError("coinbase: key refused")))
    assert outcome == {
        "outcome": "failed",
        "error": {"kind": "auth", "message": "coinbase: key refused"},
    }
    assert isinstance(book, PutBook)
    assert book.puts == []
    assert [r["outcome"] for r in log.rows] == ["failed"]


def test_compare_digest_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Authorisation goes through hmac.compare_digest, for known and unknown operators alike."""
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    _sync()
    _sync(operator="mallory")
    assert len(seen) == 2
    assert seen[0] == (b"tok-alice", b"tok-alice")
