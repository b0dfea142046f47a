"""The SQL book for real: PostgreSQL (throwaway databases) and SQLite files, read-only, exact."""

from __future__ import annotations

import socket
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from domain.report import ErrorKind
from infra.book.document import BookError
from infra.book.sql_book import SqlBook, public_db_url

QUERY = "SELECT asset, amount FROM balances WHERE account_id = :account_id"
SECRET_AMOUNT = "98765.4321"


def _conninfo(url: str) -> str:
    """A psycopg conninfo for a SQLAlchemy ``postgresql+psycopg://`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def books() -> Iterator[Callable[..., SqlBook]]:
    """Makes SqlBooks and closes them all at the end of the test."""
    made: list[SqlBook] = []

    def make(url: str, query: str = QUERY, *, timeout: float | None = None) -> SqlBook:
        book = SqlBook(url, query) if timeout is None else SqlBook(url, query, timeout=timeout)
        made.append(book)
        return book

    yield make
    for book in made:
        book.close()


def _failure(book: SqlBook, account: str = "acct-a") -> BookError:
    with pytest.raises(BookError) as caught:
        book.balances(account)
    return caught.value


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_book_db(postgres_url: Callable[[], str]) -> str:
    """A throwaway database with a NUMERIC balances table: two accounts, one duplicated asset."""
    url = postgres_url()
    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        conn.execute("CREATE TABLE balances (account_id text NOT NULL, asset text, amount numeric)")
        conn.execute(
            "INSERT INTO balances VALUES"
            " ('acct-a', 'BTC', 1.25), ('acct-a', 'USD', 1000.00),"
            " ('acct-a', 'BTC', 0.000000000000000001),"
            " ('acct-b', 'USDC', 15552.318), ('acct-b', 'ETH/USD:USDC', -1.5)"
        )
    return url


def _row_count(url: str) -> int:
    with psycopg.connect(_conninfo(url)) as conn:
        row = conn.execute("SELECT count(*) FROM balances").fetchone()
    assert row is not None
    return int(row[0])


def _add_table(url: str, ddl: str, insert: str) -> str:
    """Create and fill a table of its own (``t`` in the SQL) and return the query over it."""
    name = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(_conninfo(url), autocommit=True) as conn:
        conn.execute(ddl.replace("TABLE t ", f"TABLE {name} "))
        conn.execute(insert.replace("INTO t ", f"INTO {name} "))
    return QUERY.replace("balances", name)


@pytest.mark.postgres
def test_numeric_rows_are_exact_and_summed_per_asset(pg_book_db, books) -> None:
    """NUMERIC amounts come back as exact Decimals; two rows of one asset are summed."""
    book = books(pg_book_db)
    assert book.balances("acct-a") == {
        "BTC": Decimal("1.250000000000000001"),
        "USD": Decimal("1000.00"),
    }
    assert book.balances("acct-b") == {
        "USDC": Decimal("15552.318"),
        "ETH/USD:USDC": Decimal("-1.5"),
    }


@pytest.mark.postgres
def test_an_account_with_no_rows_has_an_empty_book(pg_book_db, books) -> None:
    """No row for the account is a valid, empty book."""
    assert books(pg_book_db).balances("acct-without-rows") == {}


@pytest.mark.postgres
def test_the_account_id_is_a_bound_parameter(pg_book_db, books) -> None:
    """An account id that looks like SQL is only ever a value: no rows, no error, no injection."""
    book = books(pg_book_db)
    assert book.balances("x' OR '1'='1") == {}
    assert _row_count(pg_book_db) == 5


@pytest.mark.postgres
@pytest.mark.parametrize(
    "query",
    [
        "WITH w AS (INSERT INTO balances VALUES (:account_id, 'XRP', 7) RETURNING asset, amount)"
        " SELECT asset, amount FROM w",
        "UPDATE balances SET amount = 0 WHERE account_id = :account_id RETURNING asset, amount",
        "DELETE FROM balances WHERE account_id = :account_id RETURNING asset, amount",
    ],
    ids=["cte-insert", "update", "delete"],
)
def test_a_query_that_writes_is_refused_and_writes_nothing(pg_book_db, books, query) -> None:
    """The read-only transaction refuses any write (kind config) and the table is unchanged."""
    error = _failure(books(pg_book_db, query))
    assert error.kind is ErrorKind.CONFIG
    assert "25006" in error.message
    assert _row_count(pg_book_db) == 5
    assert books(pg_book_db).balances("acct-a")["USD"] == Decimal("1000.00")


@pytest.mark.postgres
def test_a_second_statement_cannot_commit_a_write(pg_book_db, books) -> None:
    """`…; COMMIT; INSERT …` is refused as one prepared statement; nothing is written."""
    query = QUERY + "; COMMIT; INSERT INTO balances VALUES (:account_id, 'XRP', 7)"
    assert _failure(books(pg_book_db, query)).kind is ErrorKind.CONFIG
    assert _row_count(pg_book_db) == 5


@pytest.mark.postgres
def test_a_pooled_connection_stays_read_only_after_a_refusal(pg_book_db, books) -> None:
    """Reads, a refused write, then reads again on the same engine all behave."""
    book = books(pg_book_db)
    assert book.balances("acct-b")["USDC"] == Decimal("15552.318")
    writer = books(pg_book_db, "INSERT INTO balances VALUES (:account_id, 'X', 1) RETURNING 1, 2")
    for _ in range(3):
        assert _failure(writer).kind is ErrorKind.CONFIG
        assert book.balances("acct-b")["USDC"] == Decimal("15552.318")
    assert _row_count(pg_book_db) == 5


@pytest.mark.postgres
@pytest.mark.parametrize(
    "query",
    [
        "SELECT asset, amount FROM no_such_table WHERE account_id = :account_id",
        "SELECT asset, no_such_column FROM balances WHERE account_id = :account_id",
        "SELEKT asset, amount FROM balances WHERE account_id = :account_id",
        "SELECT account_id, asset, amount FROM balances WHERE account_id = :account_id",
        "SELECT asset FROM balances WHERE account_id = :account_id",
    ],
    ids=["undefined-table", "undefined-column", "syntax", "three-columns", "one-column"],
)
def test_a_bad_query_is_a_config_error(pg_book_db, books, query) -> None:
    """Unknown tables or columns, syntax errors and the wrong column count are kind config."""
    assert _failure(books(pg_book_db, query)).kind is ErrorKind.CONFIG


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("ddl", "insert"),
    [
        (
            "CREATE TABLE t (account_id text, asset text, amount numeric)",
            "INSERT INTO t VALUES ('acct-a', 'BTC', NULL)",
        ),
        (
            "CREATE TABLE t (account_id text, asset text, amount numeric)",
            "INSERT INTO t VALUES ('acct-a', 'BTC', 'NaN')",
        ),
        (
            "CREATE TABLE t (account_id text, asset text, amount numeric)",
            f"INSERT INTO t VALUES ('acct-a', 'BTC', 1e25 + {SECRET_AMOUNT})",
        ),
        (
            "CREATE TABLE t (account_id text, asset text, amount double precision)",
            f"INSERT INTO t VALUES ('acct-a', 'BTC', {SECRET_AMOUNT})",
        ),
        (
            "CREATE TABLE t (account_id text, asset text, amount text)",
            "INSERT INTO t VALUES ('acct-a', 'BTC', '12.5 BTC')",
        ),
        (
            "CREATE TABLE t (account_id text, asset text, amount numeric)",
            f"INSERT INTO t VALUES ('acct-a', NULL, {SECRET_AMOUNT})",
        ),
        (
            "CREATE TABLE t (account_id text, asset text, amount numeric)",
            f"INSERT INTO t VALUES ('acct-a', '  ', {SECRET_AMOUNT})",
        ),
        (
            "CREATE TABLE t (account_id text, asset text, amount numeric)",
            "INSERT INTO t VALUES ('acct-a', 'BTC', 6e19), ('acct-a', 'BTC', 6e19)",
        ),
    ],
    ids=["null", "nan", "absurd", "float", "bad-text", "null-asset", "blank-asset", "sum-absurd"],
)
def test_bad_rows_are_malformed(pg_book_db, books, ddl, insert) -> None:
    """NULL, NaN, absurd, float or unparsable amounts and missing asset codes: malformed."""
    error = _failure(books(pg_book_db, _add_table(pg_book_db, ddl, insert)))
    assert error.kind is ErrorKind.MALFORMED
    assert SECRET_AMOUNT not in error.message
    assert "98765" not in error.message


@pytest.mark.postgres
def test_a_data_error_raised_by_the_query_is_malformed(pg_book_db, books) -> None:
    """A cast the server cannot do (SQLSTATE 22xxx) is malformed data, and quotes no value."""
    query = _add_table(
        pg_book_db,
        "CREATE TABLE t (account_id text, asset text, amount text)",
        f"INSERT INTO t VALUES ('acct-a', 'BTC', 'x{SECRET_AMOUNT}')",
    ).replace("asset, amount", "asset, amount::numeric")
    error = _failure(books(pg_book_db, query))
    assert error.kind is ErrorKind.MALFORMED
    assert SECRET_AMOUNT not in error.message


@pytest.mark.postgres
def test_text_and_integer_amounts_are_accepted_exactly(pg_book_db, books) -> None:
    """Text amounts go through parse_amount; integers are exact; CHAR padding is trimmed."""
    query = _add_table(
        pg_book_db,
        "CREATE TABLE t (account_id text, asset char(6), amount text, units bigint)",
        "INSERT INTO t VALUES ('acct-a', 'BTC', ' 0.10000000 ', 3), ('acct-a', 'ETH', '-2', 4)",
    )
    book = books(pg_book_db, query)
    assert book.balances("acct-a") == {"BTC": Decimal("0.10000000"), "ETH": Decimal(-2)}
    units = books(pg_book_db, query.replace("asset, amount", "asset, units"))
    assert units.balances("acct-a") == {"BTC": Decimal(3), "ETH": Decimal(4)}


@pytest.mark.postgres
def test_a_wide_numeric_scale_is_not_taken_for_excess_digits(pg_book_db, books) -> None:
    """NUMERIC(60,40) pads 1.5 to 40 places; the zeros are dropped exactly, real digits kept."""
    query = _add_table(
        pg_book_db,
        "CREATE TABLE t (account_id text, asset text, amount numeric(60, 40))",
        "INSERT INTO t VALUES ('acct-a', 'BTC', 1.5), ('acct-b', 'BTC', 1.5e-35)",
    )
    book = books(pg_book_db, query)
    assert book.balances("acct-a") == {"BTC": Decimal("1.5")}
    assert _failure(book, "acct-b").kind is ErrorKind.MALFORMED


@pytest.mark.postgres
def test_a_query_past_the_timeout_is_a_timeout(pg_book_db, books) -> None:
    """statement_timeout cancels a slow query: kind timeout."""
    query = "SELECT asset, amount FROM balances, pg_sleep(5) WHERE account_id = :account_id"
    assert _failure(books(pg_book_db, query, timeout=0.2)).kind is ErrorKind.TIMEOUT


@pytest.mark.postgres
def test_an_unknown_database_is_a_config_error(pg_book_db, books) -> None:
    """A database the server does not have is kind config."""
    url = make_url(pg_book_db).set(database="recon_no_such_database").render_as_string()
    assert _failure(books(url)).kind is ErrorKind.CONFIG


def test_a_server_that_is_not_listening_is_unavailable(books) -> None:
    """A refused connection is kind unavailable; the message shows neither user nor password."""
    url = f"postgresql+psycopg://reader:hunter2@127.0.0.1:{_free_port()}/book?sslmode=disable"
    book = books(url)  # nothing connects yet
    error = _failure(book)
    assert error.kind is ErrorKind.UNAVAILABLE
    assert "127.0.0.1" in error.message
    for leaked in ("reader", "hunter2", "sslmode"):
        assert leaked not in error.message


def test_the_query_must_bind_account_id() -> None:
    """A query without :account_id would read one book for every account: refused up front."""
    with pytest.raises(ValueError, match="account_id"):
        SqlBook("sqlite://", "SELECT asset, amount FROM balances")


@pytest.mark.parametrize(
    "url", ["nosuchdb+nodriver://host/db", "mysql+pymysql://host/db", "not a url"]
)
def test_an_unusable_url_is_a_config_error(books, url) -> None:
    """Unknown drivers, databases without a read-only guard, or nonsense: config, at first use."""
    book = books(url)
    assert _failure(book).kind is ErrorKind.CONFIG


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://u:pw@db:5432/book?sslmode=require",
            "postgresql+psycopg://db:5432/book",
        ),
        ("sqlite:////var/lib/book.db", "sqlite:////var/lib/book.db"),
        ("not a url", "<unparsable database URL>"),
    ],
)
def test_public_db_url_strips_what_may_be_secret(url, shown) -> None:
    """public_db_url keeps driver, host, port and database only."""
    assert public_db_url(url) == shown


# --- SQLite --------------------------------------------------------------------------------


@pytest.fixture
def sqlite_book_db(tmp_path: Path) -> Path:
    """A SQLite file with TEXT amounts (SQLite's NUMERIC would store 1.25 as a float)."""
    path = tmp_path / "book.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE balances (account_id TEXT, asset TEXT, amount)")
        conn.executemany(
            "INSERT INTO balances VALUES (?, ?, ?)",
            [
                ("acct-a", "BTC", "1.25"),
                ("acct-a", "BTC", "0.000000000000000001"),
                ("acct-a", "USD", 1000),
                ("acct-b", "ETH", 0.1),  # a REAL: not exact
            ],
        )
    conn.close()
    return path


def test_sqlite_text_amounts_are_exact(sqlite_book_db, books) -> None:
    """SQLite TEXT and INTEGER amounts are exact; an account without rows is empty."""
    book = books(f"sqlite:///{sqlite_book_db}")
    assert book.balances("acct-a") == {"BTC": Decimal("1.250000000000000001"), "USD": Decimal(1000)}
    assert book.balances("acct-c") == {}


def test_sqlite_real_amounts_are_malformed(sqlite_book_db, books) -> None:
    """A REAL amount is a float, not exact: malformed."""
    assert _failure(books(f"sqlite:///{sqlite_book_db}"), "acct-b").kind is ErrorKind.MALFORMED


def test_sqlite_is_read_only(sqlite_book_db, books) -> None:
    """A writing query is refused on SQLite too (kind config), and nothing is written."""
    query = "INSERT INTO balances VALUES (:account_id, 'XRP', '7') RETURNING asset, amount"
    assert _failure(books(f"sqlite:///{sqlite_book_db}", query)).kind is ErrorKind.CONFIG
    with sqlite3.connect(sqlite_book_db) as conn:
        assert conn.execute("SELECT count(*) FROM balances").fetchone() == (4,)
    conn.close()


def test_sqlite_missing_file_is_unavailable_and_not_created(tmp_path, books) -> None:
    """A book file that does not exist is kind unavailable, and is never created empty."""
    path = tmp_path / "absent.db"
    assert _failure(books(f"sqlite:///{path}")).kind is ErrorKind.UNAVAILABLE
    assert not path.exists()


def test_sqlite_unknown_table_is_a_config_error(sqlite_book_db, books) -> None:
    """A query over a table the file does not have is kind config."""
    book = books(f"sqlite:///{sqlite_book_db}", QUERY.replace("balances", "nope"))
    assert _failure(book).kind is ErrorKind.CONFIG


def test_sqlite_query_only_guards_an_explicit_uri_too(sqlite_book_db, books) -> None:
    """An explicit read-write SQLite URI is still refused writes by PRAGMA query_only."""
    url = f"sqlite:///file:{sqlite_book_db}?mode=rw&uri=true"
    query = "DELETE FROM balances WHERE account_id = :account_id RETURNING asset, amount"
    assert _failure(books(url, query)).kind is ErrorKind.CONFIG
    assert books(url).balances("acct-a")["USD"] == Decimal(1000)
    with sqlite3.connect(sqlite_book_db) as conn:
        assert conn.execute("SELECT count(*) FROM balances").fetchone() == (4,)
    conn.close()
