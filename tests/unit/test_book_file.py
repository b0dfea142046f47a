"""The book JSON (DESIGN §2) and the file book: exact amounts, refusals, re-reading."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from domain.report import ErrorKind, FetchError, SourceError
from infra.book import BookError, FileBook, load_book_document, parse_book_json

EXAMPLE = b"""{"as_of": "2026-11-24T00:00:00Z",
 "accounts": {"cb-main": {"BTC": "1.25", "USD": "1000.00"},
              "dydx-0":  {"USDC": "15552.318", "ETH/USD:USDC": "-1.5"}}}"""


def _book(accounts: object, as_of: object = "2026-11-24T00:00:00Z") -> bytes:
    return json.dumps({"as_of": as_of, "accounts": accounts}).encode()


def _malformed(raw: bytes) -> BookError:
    with pytest.raises(BookError) as caught:
        parse_book_json(raw, "book.json")
    assert caught.value.kind is ErrorKind.MALFORMED
    return caught.value


def test_the_design_example_parses_exactly() -> None:
    """The §2 example gives exact Decimals, signed perps, and the as_of time."""
    document = parse_book_json(EXAMPLE, "book.json")
    assert document.as_of == datetime(2026, 11, 24, tzinfo=UTC)
    assert document.balances("cb-main") == {"BTC": Decimal("1.25"), "USD": Decimal("1000.00")}
    assert document.balances("dydx-0") == {
        "USDC": Decimal("15552.318"),
        "ETH/USD:USDC": Decimal("-1.5"),
    }


def test_an_account_absent_from_the_book_has_an_empty_book() -> None:
    """Balances of an account the book does not list are empty, not an error."""
    assert parse_book_json(EXAMPLE, "book.json").balances("kr-1") == {}


def test_json_numbers_are_parsed_exactly() -> None:
    """JSON numbers never go through float: 0.1 is Decimal("0.1"), every digit kept."""
    raw = b'{"accounts": {"a": {"BTC": 0.1, "ETH": 1.2345678901234567890123, "USD": 42}}}'
    balances = parse_book_json(raw, "book.json").balances("a")
    assert balances == {
        "BTC": Decimal("0.1"),
        "ETH": Decimal("1.2345678901234567890123"),
        "USD": Decimal(42),
    }
    assert str(balances["ETH"]) == "1.2345678901234567890123"


def test_as_of_is_optional_and_naive_times_are_utc() -> None:
    """A book without as_of parses; an as_of without a zone is taken as UTC."""
    assert parse_book_json(b'{"accounts": {}}', "b").as_of is None
    naive = parse_book_json(_book({}, "2026-11-24T08:30:00"), "b").as_of
    assert naive == datetime(2026, 11, 24, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (b"NaN", "not finite"),
        (b"Infinity", "not finite"),
        (b"-Infinity", "not finite"),
        (b'"NaN"', "not finite"),
        (b'"Infinity"', "not finite"),
        (b"1e400", "out of range"),
        (b'"1e400"', "out of range"),
        (b'"123456789012345678901234567"', "out of range"),
        (b'"12.5 BTC"', "not a decimal number"),
        (b'"abc"', "not a decimal number"),
        (b'""', "empty"),
        (b"true", "not bool"),
        (b"null", "not NoneType"),
        (b'{"v": "1"}', "not dict"),
        (b'["1"]', "not list"),
    ],
)
def test_bad_amounts_are_malformed_naming_account_and_asset(amount: bytes, reason: str) -> None:
    """NaN, Infinity, absurd and non-numeric amounts are refused, naming where, not what."""
    raw = b'{"accounts": {"cb-main": {"USD": "1", "BTC": ' + amount + b"}}}"
    error = _malformed(raw)
    assert str(error).startswith("book.json: account 'cb-main': asset 'BTC': ")
    assert reason in str(error)


def test_messages_never_contain_the_amount() -> None:
    """A refused amount is not repeated in the message."""
    error = _malformed(_book({"cb-main": {"BTC": "98765.4321x"}}))
    assert "98765" not in str(error)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"<html>502 Bad Gateway</html>", "book.json: not valid JSON (Expecting value"),
        (b'{"accounts": {"a": {"BTC": "1"', "book.json: not valid JSON"),
        (b"", "book.json: not valid JSON"),
        (b"\xff\xfe\xfa", "book.json: not"),
        (b'["accounts"]', "book.json: the book must be a JSON object"),
        (b'{"as_of": "x"}', "book.json: 'accounts' must be an object"),
        (b'{"accounts": [["a", {}]]}', "book.json: 'accounts' must be an object"),
        (b'{"accounts": {"a": ["BTC", "1"]}}', "book.json: account 'a': must be an object"),
        (b'{"accounts": {"a": {"": "1"}}}', "book.json: account 'a': an asset code is empty"),
        (
            b'{"accounts": {"a": {"BTC": "1", "BTC": "2"}}}',
            "book.json: key 'BTC' appears twice in one object",
        ),
        (b'{"accounts": {"a": {}, "a": {}}}', "book.json: key 'a' appears twice"),
        (b'{"as_of": 5, "accounts": {}}', "book.json: 'as_of' must be an ISO 8601 time"),
        (b'{"as_of": "yesterday", "accounts": {}}', "book.json: 'as_of' is not an ISO 8601"),
        (b"[" * 100_000 + b"]" * 100_000, "book.json: not valid JSON (nested too deeply)"),
    ],
)
def test_malformed_documents_are_refused(raw: bytes, expected: str) -> None:
    """Anything but the documented JSON is a malformed book."""
    assert str(_malformed(raw)).startswith(expected)


def test_book_error_is_a_source_error_for_the_report() -> None:
    """BookError is what the cycle catches and records as the report's error."""
    error = _malformed(b"nope")
    assert isinstance(error, SourceError)
    assert error.to_fetch_error() == FetchError(ErrorKind.MALFORMED, str(error))


def test_file_book_reads_the_file(tmp_path: Path) -> None:
    """FileBook.balances gives one account's book from the file."""
    path = tmp_path / "book.json"
    path.write_bytes(EXAMPLE)
    book = FileBook(path)
    assert book.balances("cb-main") == {"BTC": Decimal("1.25"), "USD": Decimal("1000.00")}
    assert book.balances("unlisted") == {}


def test_file_book_sees_an_updated_book(tmp_path: Path) -> None:
    """A book rewritten in place or replaced by rename is read again by the next call."""
    path = tmp_path / "book.json"
    path.write_bytes(_book({"a": {"BTC": "1"}}))
    book = FileBook(path)
    assert book.balances("a") == {"BTC": Decimal(1)}
    path.write_bytes(_book({"a": {"BTC": "2.5"}}))
    assert book.balances("a") == {"BTC": Decimal("2.5")}
    staged = tmp_path / "book.json.new"
    staged.write_bytes(_book({"a": {"BTC": "3"}}))
    staged.replace(path)
    assert book.balances("a") == {"BTC": Decimal(3)}


def test_same_size_rewrite_with_a_new_mtime_is_seen(tmp_path: Path) -> None:
    """A rewrite of equal size is detected through its modification time."""
    path = tmp_path / "book.json"
    path.write_bytes(_book({"a": {"BTC": "1"}}))
    book = FileBook(path)
    assert book.balances("a") == {"BTC": Decimal(1)}
    stat = path.stat()
    path.write_bytes(_book({"a": {"BTC": "2"}}))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert book.balances("a") == {"BTC": Decimal(2)}


def test_an_unchanged_file_is_parsed_once(tmp_path: Path) -> None:
    """Many accounts read from an unchanged file share one parsed document."""
    path = tmp_path / "book.json"
    path.write_bytes(EXAMPLE)
    book = FileBook(path)
    assert book.document() is book.document()


def test_balances_are_a_private_copy(tmp_path: Path) -> None:
    """Changing the returned dict does not change the book."""
    path = tmp_path / "book.json"
    path.write_bytes(EXAMPLE)
    book = FileBook(path)
    book.balances("cb-main")["BTC"] = Decimal(0)
    assert book.balances("cb-main")["BTC"] == Decimal("1.25")


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_an_unreadable_book_is_unavailable(tmp_path: Path, make: str) -> None:
    """A missing file or a directory is an unavailable book, naming the file."""
    path = tmp_path / "book.json"
    if make == "directory":
        path.mkdir()
    with pytest.raises(BookError) as caught:
        FileBook(path).balances("a")
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    assert str(caught.value).startswith(f"{path}: cannot read the book file (")


def test_a_malformed_file_names_the_file(tmp_path: Path) -> None:
    """Errors from a file book name the file's path."""
    path = tmp_path / "book.json"
    path.write_bytes(_book({"cb-main": {"BTC": "NaN"}}))
    with pytest.raises(
        BookError, match="^" + re.escape(f"{path}: account 'cb-main': asset 'BTC': ")
    ):
        FileBook(path).balances("cb-main")


def test_load_book_document_returns_every_account(tmp_path: Path) -> None:
    """load_book_document gives plain dicts of every account's exact balances."""
    path = tmp_path / "book.json"
    path.write_bytes(EXAMPLE)
    assert load_book_document(path) == {
        "cb-main": {"BTC": Decimal("1.25"), "USD": Decimal("1000.00")},
        "dydx-0": {"USDC": Decimal("15552.318"), "ETH/USD:USDC": Decimal("-1.5")},
    }
