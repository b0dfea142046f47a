"""The book writers of ``recon sync``: HttpBook's PUT to a loopback server, SqlBook's upsert on
PostgreSQL and SQLite, and the sync end to end (refusals write nothing, every attempt logged)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from app.cycle import AccountPlan
from app.sync import sync_balances
from domain.report import ErrorKind
from infra.book.document import BookError
from infra.book.file_book import FileBook
from infra.book.http_book import HttpBook
from infra.book.sql_book import SqlBook
from infra.db import create_audit_engine, upgrade
from infra.db.operator_actions import OperatorActionLog
from infra.venues.retry import RetryPolicy
from tests.support import PutRecorder, put_recorder

T0 = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)
UPSERT_PG = (
    "INSERT INTO balances (account_id, asset, amount) VALUES (:account_id, :asset, :amount) "
    "ON CONFLICT (account_id, asset) DO UPDATE SET amount = EXCLUDED.amount"
)
UPSERT_SQLITE = (
    "INSERT INTO balances (account_id, asset, amount) VALUES (:account_id, :asset, "
    ":amount) ON CONFLICT (account_id, asset) DO UPDATE SET amount = excluded.amount"
)
QUERY = "SELECT asset, amount FROM balances WHERE account_id = :account_id"


@pytest.fixture
def server() -> Iterator[PutRecorder]:
    with put_recorder() as httpd:
        yield httpd


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False) as client:
        yield client


def test_put_sends_the_documented_body(server: PutRecorder, http: httpx.Client) -> None:
    """PUT {url}/{account_id} carries account_id, as_of and every amount as a decimal string."""
    book = HttpBook(http, server.url, timeout=5)
    book.put_balances("cb main", {"BTC": Decimal("1.2500"), "USD": Decimal("10")}, T0)
    [(path, content_type, body)] = server.received
    assert path == "/book/cb%20main"
    assert content_type == "application/json"
    assert json.loads(body) == {
        "account_id": "cb main",
        "as_of": "2026-11-24T05:00:00Z",
        "balances": {"BTC": "1.25", "USD": "10"},
    }


@pytest.mark.parametrize(
    ("status", "kind"),
    [(500, ErrorKind.UNAVAILABLE), (403, ErrorKind.AUTH), (404, ErrorKind.CONFIG)],
)
def test_put_non_2xx_is_a_book_error(
    server: PutRecorder, http: httpx.Client, status: int, kind: ErrorKind
) -> None:
    """A non-2xx answer to the PUT raises a BookError whose kind says why, without amounts."""
    server.status = status
    book = HttpBook(http, server.url, timeout=5)
    with pytest.raises(BookError) as caught:
        book.put_balances("acct", {"BTC": Decimal("98765.4321")}, T0)
    assert caught.value.kind is kind
    assert "98765" not in caught.value.message


# --- SQL upsert ----------------------------------------------------------------------------


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.postgres
def test_sql_upsert_on_postgres(postgres_url: Callable[[], str]) -> None:
    """The upsert runs once per asset in one transaction; a failure part-way writes nothing."""
    url = postgres_url()
    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE balances (account_id text, asset text, amount numeric NOT NULL "
            "CHECK (amount >= 0), PRIMARY KEY (account_id, asset))"
        )
        conn.execute("INSERT INTO balances VALUES ('acct', 'BTC', 1)")
    book = SqlBook(url, QUERY, upsert=UPSERT_PG, timeout=5)
    try:
        assert book.writable
        book.upsert_balances("acct", {"BTC": Decimal("1.23456789"), "ETH": Decimal("2")})
        assert book.balances("acct") == {"BTC": Decimal("1.23456789"), "ETH": Decimal("2")}
        with pytest.raises(BookError) as caught:
            book.upsert_balances("acct", {"BTC": Decimal("5"), "ETH": Decimal("-1")})
        assert "-1" not in caught.value.message
        assert book.balances("acct") == {"BTC": Decimal("1.23456789"), "ETH": Decimal("2")}
    finally:
        book.close()


def test_sql_upsert_on_sqlite(tmp_path: Path) -> None:
    """On SQLite the upsert opens the file read-write (reads stay read-only) and stores text."""
    path = tmp_path / "book.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE balances (account_id TEXT, asset TEXT, amount TEXT, "
            "PRIMARY KEY (account_id, asset))"
        )
    conn.close()
    book = SqlBook(f"sqlite:///{path}", QUERY, upsert=UPSERT_SQLITE, timeout=5)
    try:
        book.upsert_balances("acct", {"BTC": Decimal("0.10000001")})
        assert book.balances("acct") == {"BTC": Decimal("0.10000001")}
    finally:
        book.close()


def test_upsert_must_bind_its_parameters() -> None:
    """An upsert not binding :account_id, :asset and :amount is a configuration error."""
    with pytest.raises(ValueError, match="amount"):
        SqlBook("sqlite://", QUERY, upsert="INSERT INTO b VALUES (:account_id, :asset)")
    assert not SqlBook("sqlite://", QUERY).writable


# --- the sync end to end -------------------------------------------------------------------


class _Venue:
    def __init__(self) -> None:
        self.calls = 0

    def fetch_balances(self) -> dict[str, Decimal]:
        self.calls += 1
        return {"BTC": Decimal("3.5")}


def _sync(book: object, log: OperatorActionLog, token: str, venue: _Venue) -> dict[str, object]:
    return sync_balances(
        account_id="acct",
        operator="alice",
        token=token,
        reason="desk asked",
        tokens={"alice": SecretStr("right")},
        plan=AccountPlan(account_id="acct", exchange="coinbase", client=venue),
        book=book,
        log=log,
        retry=RetryPolicy(retries=0),
        clock=lambda: T0,
    )


def test_sync_over_http_refusal_writes_nothing_and_is_recorded(
    server: PutRecorder, http: httpx.Client, tmp_path: Path
) -> None:
    """A refused sync sends no PUT and leaves a refused row; an authorised one PUTs and syncs."""
    engine = create_audit_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        upgrade(engine)
        log = OperatorActionLog(engine)
        venue = _Venue()
        book = HttpBook(http, server.url, timeout=5)
        assert _sync(book, log, "wrong", venue) == {
            "outcome": "refused",
            "reason": "not authorised",
        }
        assert server.received == []
        assert venue.calls == 0
        assert _sync(book, log, "right", venue) == {"outcome": "synced", "assets": 1}
        assert json.loads(server.received[0][2])["balances"] == {"BTC": "3.5"}
        rows = log.history(10)
        assert [(r.operator, r.action, r.outcome) for r in rows] == [
            ("alice", "sync", "synced"),
            ("alice", "sync", "refused"),
        ]
        assert all("right" not in json.dumps(r.detail) for r in rows)
    finally:
        engine.dispose()


def test_sync_to_a_file_book_is_refused(tmp_path: Path) -> None:
    """A file book is not writable: the authorised sync is refused, recorded, file unchanged."""
    path = tmp_path / "book.json"
    path.write_text('{"accounts": {"acct": {"BTC": "1"}}}')
    engine = create_audit_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        upgrade(engine)
        log = OperatorActionLog(engine)
        outcome = _sync(FileBook(path), log, "right", _Venue())
        assert outcome == {"outcome": "refused", "reason": "book not writable"}
        assert path.read_text() == '{"accounts": {"acct": {"BTC": "1"}}}'
        assert [r.outcome for r in log.history(5)] == ["refused"]
    finally:
        engine.dispose()
