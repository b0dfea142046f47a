"""``recon sync`` from a shell: exit 0 synced, 8 refused, 9 failed; every attempt recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.support import (
    Desk,
    PutRecorder,
    coin,
    coinbase_venue,
    desk_fixture,  # noqa: F401  (the ``desk`` fixture)
    put_recorder,
    roster_entry,
)

VENUE = coinbase_venue("cb-main", balances=[coin("BTC", "1.5"), coin("ETH", "2", "0.5")])
BOOK = {"cb-main": {"BTC": "1", "ETH": "2"}}
TOKENS = "alice=tok-alice,bob=tok-bob"


@pytest.fixture
def put_server() -> Iterator[PutRecorder]:
    with put_recorder() as httpd:
        yield httpd


def _use_http_book(desk: Desk, url: str) -> None:
    roster = desk.roster_path.read_text(encoding="utf-8")
    file_book = f'source = "file"\npath = "{desk.book_path.name}"'
    assert file_book in roster
    desk.roster_path.write_text(
        roster.replace(file_book, f'source = "http"\nurl = "{url}"'), encoding="utf-8"
    )


def _actions(desk: Desk) -> list[tuple[str, str, str, str]]:
    engine = create_engine(desk.database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT operator, action, account_id, outcome FROM operator_actions ORDER BY id"
                )
            ).all()
        return [tuple(row) for row in rows]
    finally:
        engine.dispose()


def _sync(desk: Desk, operator: str, token: str, reason: str = "book drift") -> Any:
    return desk.recon(
        "sync",
        "--account",
        "cb-main",
        "--operator",
        operator,
        "--reason",
        reason,
        RECONCILIATION_OPERATOR_TOKENS=TOKENS,
        RECONCILIATION_OPERATOR_TOKEN=token,
    )


def test_sync_authorised_then_refused(desk: Desk, put_server: PutRecorder) -> None:
    """A right token syncs (exit 0, one PUT); a wrong one exits 8 and PUTs nothing; both logged."""
    desk.start(VENUE, book=BOOK)
    _use_http_book(desk, f"http://127.0.0.1:{put_server.server_address[1]}/book")
    refused = _sync(desk, "alice", "tok-bob")
    assert refused.exit_code == 8
    assert json.loads(refused.stdout) == {"outcome": "refused", "reason": "not authorised"}
    assert put_server.received == []
    synced = _sync(desk, "alice", "tok-alice")
    assert synced.exit_code == 0, synced.stderr
    assert json.loads(synced.stdout) == {"outcome": "synced", "assets": 2}
    [(path, _content_type, body)] = put_server.received
    assert path == "/book/cb-main"
    assert json.loads(body)["balances"] == {"BTC": "1.5", "ETH": "2.5"}
    assert "tok-alice" not in synced.stdout + synced.stderr
    assert _actions(desk) == [
        ("alice", "sync", "cb-main", "refused"),
        ("alice", "sync", "cb-main", "synced"),
    ]


def test_sync_to_a_file_book_is_refused(desk: Desk) -> None:
    """The file book is not writable: exit 8, the book file unchanged, the attempt recorded."""
    desk.start(VENUE, book=BOOK)
    before = desk.book_path.read_text(encoding="utf-8")
    result = _sync(desk, "alice", "tok-alice")
    assert result.exit_code == 8
    assert json.loads(result.stdout) == {"outcome": "refused", "reason": "book not writable"}
    assert desk.book_path.read_text(encoding="utf-8") == before
    assert _actions(desk) == [("alice", "sync", "cb-main", "refused")]


def test_sync_with_an_unreachable_venue_fails(desk: Desk, put_server: PutRecorder) -> None:
    """A venue that cannot be read ends the sync as failed: exit 9, no PUT, recorded."""
    desk.start(VENUE, book=BOOK)
    desk.write_roster([roster_entry(VENUE, "http://127.0.0.1:1")])
    _use_http_book(desk, f"http://127.0.0.1:{put_server.server_address[1]}/book")
    result = _sync(desk, "bob", "tok-bob")
    assert result.exit_code == 9
    outcome = json.loads(result.stdout)
    assert outcome["outcome"] == "failed"
    assert outcome["error"]["kind"] == "unavailable"
    assert put_server.received == []
    assert _actions(desk) == [("bob", "sync", "cb-main", "failed")]
