"""The book in a SQL database (``[book] source = "sql"``), read by the configured query.

``query`` is a parameterised SELECT binding ``:account_id`` and returning rows
``(asset, amount)``, e.g. ``SELECT asset, amount FROM balances WHERE account_id = :account_id``.
It runs once per account, in a **read-only transaction** that is always rolled back:

- PostgreSQL (psycopg 3): ``SET TRANSACTION READ ONLY`` opens the transaction, then
  ``SET LOCAL statement_timeout`` bounds the query by ``timeout``; a query that tries to write
  (``WITH x AS (INSERT … RETURNING …) SELECT …``) fails with SQLSTATE 25006 and writes nothing.
  psycopg sends the query as one prepared statement, so ``…; COMMIT; INSERT …`` is refused too.
- SQLite: a file is opened read-only (``mode=ro``: a missing file is never created), and every
  connection runs ``PRAGMA query_only = ON``. ``timeout`` is the busy timeout there; SQLite has
  no statement timeout.
- Any other database is refused (kind config): its reads could not be held to read-only.

Amounts are taken exactly: NUMERIC → Decimal, integers, and text parsed by
:func:`domain.amounts.parse_amount`. A float (``double precision``, ``real``; in SQLite any
REAL value, which is what a NUMERIC column holds for ``1.25``: store amounts as TEXT there) is
refused as malformed, since it is no longer exact; so are NULL, NaN, Infinity and absurd
magnitudes. Rows of one asset are summed. An account with no rows has an empty book.

Failures are :class:`~infra.book.document.BookError`, never an empty book::

    cannot connect (refused, reset, server shutting down), lock or resource errors → unavailable
    statement_timeout (SQLSTATE 57014), SQLite busy past its timeout              → timeout
    login refused (password, role, pg_hba), SQLSTATE 28xxx, 42501 privilege       → auth
    unknown database, table or column, syntax error, a write refused by the
    read-only transaction, a query not returning exactly two columns              → config
    NULL / float / non-finite / absurd amount, empty asset code, SQLSTATE 22xxx   → malformed

Messages name the database by its URL without user, password or query string, and the SQLSTATE
or SQLite error name: never a driver message (it may quote a value) and never an amount.
The engine is created on first use (nothing connects at import or construction);
:meth:`SqlBook.close` disposes it.

Writing (``recon sync``, DESIGN §5 Operator actions) is separate: with ``upsert`` configured
(``[book] upsert``, binding ``:account_id``, ``:asset`` and ``:amount``),
:meth:`SqlBook.upsert_balances` runs it once per asset in ONE read-write transaction (all or
nothing). SQLite gets its own read-write engine for that; reads stay read-only.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from decimal import Context, Decimal, Inexact, InvalidOperation
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import ConnectionPoolEntry

from domain.amounts import MAX_FRACTION_DIGITS, InvalidAmount, add, format_amount, parse_amount
from domain.report import ErrorKind
from infra.book.document import BookError

#: Default bound (seconds) on connecting and on running the query.
DEFAULT_TIMEOUT_SECONDS: Final = 10.0
#: Strips trailing zeros of a NUMERIC with a wide scale (``1.5000…0`` at scale 40) exactly.
_EXACT: Final = Context(prec=200, traps=[InvalidOperation, Inexact])

# SQLite primary result codes (``sqlite3.Error.sqlite_errorcode & 0xFF``).
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
_SQLITE_READONLY: Final = 8
_SQLITE_INTERRUPT: Final = 9
_SQLITE_AUTH: Final = 23
_SQLITE_CONFIG_CODES: Final = frozenset({1, _SQLITE_READONLY, 12, 19, 20, 25})  # ERROR, …, RANGE

# libpq reports a refused login only as text (no SQLSTATE before the session exists).
_LOGIN_REFUSED: Final = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "authentication failed",
    "password is required",
    "no password supplied",
)


def public_db_url(url: str | URL) -> str:
    """``url`` fit for a message: driver, host, port and database; no user, password or query."""
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError:
        return "<unparsable database URL>"
    bare = URL.create(
        parsed.drivername, host=parsed.host, port=parsed.port, database=parsed.database
    )
    return bare.render_as_string()


class SqlBook:
    """The book as rows of a SQL query; satisfies the cycle's ``BookSource``.

    Thread-safe: the engine's pool hands each call its own connection.
    """

    def __init__(
        self,
        url: str,
        query: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        upsert: str | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._url = url
        self._statement = text(query)
        if "account_id" not in self._statement.compile().params:
            raise ValueError("the book query must select by the :account_id parameter")
        self._upsert = None if upsert is None else text(upsert)
        if self._upsert is not None:
            missing = {"account_id", "asset", "amount"} - set(self._upsert.compile().params)
            if missing:
                raise ValueError(
                    f"the book upsert must bind {', '.join(sorted(missing))} "
                    "(:account_id, :asset, :amount)"
                )
        self._write_engine: Engine | None = None
        self.source = f"book {public_db_url(url)}"
        self._timeout = timeout
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def balances(self, account_id: str) -> dict[str, Decimal]:
        """What the book's rows say ``account_id`` holds; empty when the query finds no row."""
        engine = self._engine_or_raise()
        where = f"{self.source}: account {account_id!r}"
        try:
            connection = engine.connect()
        except sa_exc.DBAPIError as error:
            raise BookError(
                f"{where}: cannot connect ({_describe(error)})", _connect_kind(error)
            ) from None
        except sa_exc.SQLAlchemyError as error:  # pool timeout and the like
            raise BookError(
                f"{where}: cannot connect ({type(error).__name__})", ErrorKind.UNAVAILABLE
            ) from None
        with connection:
            try:
                rows = self._read(connection, account_id)
            except sa_exc.DBAPIError as error:
                raise BookError(
                    f"{where}: the query failed ({_describe(error)})", _query_kind(error)
                ) from None
            except sa_exc.ResourceClosedError:
                raise BookError(
                    f"{where}: the query returns no rows (it must be a SELECT)", ErrorKind.CONFIG
                ) from None
            except sa_exc.SQLAlchemyError as error:
                raise BookError(
                    f"{where}: the query failed ({type(error).__name__})", ErrorKind.CONFIG
                ) from None
        return _balances(rows, where)

    @property
    def writable(self) -> bool:
        """Whether an ``upsert`` statement is configured (``recon sync`` can write)."""
        return self._upsert is not None

    def upsert_balances(self, account_id: str, balances: Mapping[str, Decimal]) -> None:
        """Run the configured ``upsert`` once per asset, all in ONE read-write transaction.

        Binds ``:account_id``, ``:asset`` and ``:amount`` (a Decimal; on SQLite its canonical
        decimal string, the driver binding no Decimal). Either every
        asset is written or none is. Raises :class:`BookError` (kind config when no upsert is
        configured; otherwise as for reads), never quoting a value.
        """
        where = f"{self.source}: account {account_id!r}"
        if self._upsert is None:
            raise BookError(f"{where}: the book has no upsert statement", ErrorKind.CONFIG)
        engine = self._write_engine_or_raise()
        try:
            with engine.connect() as connection, connection.begin():
                if connection.dialect.name == "postgresql":
                    timeout_ms = max(1, math.ceil(self._timeout * 1000))
                    connection.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout_ms}")
                # SQLite's driver cannot bind a Decimal: the canonical decimal string there.
                as_text = connection.dialect.name == "sqlite"
                for asset, amount in balances.items():
                    value = format_amount(amount) if as_text else amount
                    connection.execute(
                        self._upsert, {"account_id": account_id, "asset": asset, "amount": value}
                    )
        except sa_exc.DBAPIError as error:
            raise BookError(
                f"{where}: the upsert failed ({_describe(error)})", _query_kind(error)
            ) from None
        except sa_exc.SQLAlchemyError as error:
            raise BookError(
                f"{where}: the upsert failed ({type(error).__name__})", ErrorKind.CONFIG
            ) from None

    def close(self) -> None:
        """Dispose the engines (a later call creates new ones)."""
        with self._lock:
            engine, self._engine = self._engine, None
            write_engine, self._write_engine = self._write_engine, None
        for each in (engine, write_engine):
            if each is not None:
                each.dispose()

    def _write_engine_or_raise(self) -> Engine:
        """PostgreSQL shares the read engine (read-only is per transaction); SQLite needs a
        connection opened read-write, without ``query_only``."""
        sa_url = make_url(self._url)
        if sa_url.get_backend_name() != "sqlite":
            return self._engine_or_raise()
        with self._lock:
            if self._write_engine is None:
                self._write_engine = create_engine(
                    sa_url, connect_args={"timeout": self._timeout}, hide_parameters=True
                )
            return self._write_engine

    def _read(self, connection: Connection, account_id: str) -> list[tuple[Any, ...]]:
        with connection.begin() as transaction:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql("SET TRANSACTION READ ONLY")
                timeout_ms = max(1, math.ceil(self._timeout * 1000))
                connection.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout_ms}")
            result = connection.execute(self._statement, {"account_id": account_id})
            columns = len(result.keys())
            rows = [tuple(row) for row in result]
            transaction.rollback()  # read only: nothing to keep, whatever the query did
        if columns != 2:
            raise BookError(
                f"{self.source}: the query must return two columns (asset, amount), not {columns}",
                ErrorKind.CONFIG,
            )
        return rows

    def _engine_or_raise(self) -> Engine:
        with self._lock:
            if self._engine is None:
                try:
                    self._engine = _create_engine(self._url, self._timeout)
                except _UnsupportedBackend as error:
                    raise BookError(
                        f"{self.source}: a {error.backend} book is not supported (the read-only "
                        "transaction is implemented for postgresql and sqlite)",
                        ErrorKind.CONFIG,
                    ) from None
                except (sa_exc.ArgumentError, sa_exc.NoSuchModuleError, ImportError) as error:
                    raise BookError(
                        f"{self.source}: not a usable database URL ({type(error).__name__})",
                        ErrorKind.CONFIG,
                    ) from None
            return self._engine


class _UnsupportedBackend(Exception):
    """A database this module cannot hold to read-only."""

    def __init__(self, backend: str) -> None:
        super().__init__(backend)
        self.backend = backend


def _create_engine(url: str, timeout: float) -> Engine:
    sa_url = make_url(url)
    backend = sa_url.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            _read_only_sqlite(sa_url), connect_args={"timeout": timeout}, hide_parameters=True
        )
        event.listen(engine, "connect", _sqlite_query_only)
        return engine
    if backend != "postgresql":
        raise _UnsupportedBackend(backend)
    if sa_url.drivername == "postgresql":
        sa_url = sa_url.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in sa_url.query:
        connect_args["connect_timeout"] = max(2, math.ceil(timeout))  # libpq's least is 2 s
    return create_engine(
        sa_url, connect_args=connect_args, pool_pre_ping=True, hide_parameters=True
    )


def _read_only_sqlite(url: URL) -> URL:
    """A SQLite file URL opened with ``mode=ro`` (in-memory and explicit URIs kept as given)."""
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("uri") == "true":
        return url
    path = quote(str(Path(database).resolve()))
    return url.set(database=f"file:{path}", query={**url.query, "mode": "ro", "uri": "true"})


def _sqlite_query_only(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    dbapi_connection.execute("PRAGMA query_only = ON").close()


# --- rows → balances -----------------------------------------------------------------------


def _balances(rows: Iterable[tuple[Any, ...]], where: str) -> dict[str, Decimal]:
    balances: dict[str, Decimal] = {}
    for asset_value, amount_value in rows:
        asset = _asset(asset_value, where)
        amount = _amount(amount_value, f"{where}: asset {asset!r}")
        if asset in balances:
            try:
                amount = parse_amount(add(balances[asset], amount))
            except (ArithmeticError, InvalidAmount):
                raise BookError(
                    f"{where}: asset {asset!r}: the sum of its rows is out of range",
                    ErrorKind.MALFORMED,
                ) from None
        balances[asset] = amount
    return balances


def _asset(value: object, where: str) -> str:
    if not isinstance(value, str):
        kind = "NULL" if value is None else type(value).__name__
        raise BookError(f"{where}: an asset code is {kind}, not text", ErrorKind.MALFORMED)
    asset = value.strip()  # CHAR(n) columns pad with spaces
    if not asset:
        raise BookError(f"{where}: an asset code is empty", ErrorKind.MALFORMED)
    return asset


def _amount(value: object, where: str) -> Decimal:
    if value is None:
        raise BookError(f"{where}: the amount is NULL", ErrorKind.MALFORMED)
    if isinstance(value, float):
        raise BookError(
            f"{where}: the amount is a float, which is not exact; use NUMERIC or text",
            ErrorKind.MALFORMED,
        )
    if isinstance(value, Decimal) and value.is_finite():
        value = _without_excess_zeros(value)
    try:
        return parse_amount(value)
    except InvalidAmount as error:
        raise BookError(f"{where}: {error}", ErrorKind.MALFORMED) from None


def _without_excess_zeros(value: Decimal) -> Decimal:
    """``value`` with trailing zeros past MAX_FRACTION_DIGITS dropped, when that is exact."""
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int) or -exponent <= MAX_FRACTION_DIGITS:
        return value
    try:
        return value.quantize(Decimal(1).scaleb(-MAX_FRACTION_DIGITS), context=_EXACT)
    except ArithmeticError:
        return value  # real digits beyond the limit: parse_amount refuses it


# --- errors → kinds ------------------------------------------------------------------------


#: A word on the SQLSTATEs an operator is most likely to meet.
_HINTS: Final = {
    "25006": "the query tries to write; the book is read in a read-only transaction",
    "57014": "the query ran past the timeout",
    "42P01": "no such table",
    "42703": "no such column",
    "42601": "syntax error, or more than one statement",
    "3D000": "no such database",
}


def _describe(error: sa_exc.DBAPIError) -> str:
    """What went wrong without the driver's text (it may quote values)."""
    orig = error.orig
    if isinstance(orig, psycopg.Error) and orig.sqlstate:
        hint = _HINTS.get(orig.sqlstate)
        described = f"SQLSTATE {orig.sqlstate} {type(orig).__name__}"
        return f"{described}: {hint}" if hint else described
    if isinstance(orig, sqlite3.Error) and getattr(orig, "sqlite_errorname", None):
        return f"{orig.sqlite_errorname}"
    return type(orig).__name__


def _connect_kind(error: sa_exc.DBAPIError) -> ErrorKind:
    orig = error.orig
    if isinstance(orig, psycopg.Error):
        if orig.sqlstate:
            return _sqlstate_kind(orig.sqlstate)
        message = str(orig)
        if any(marker in message for marker in _LOGIN_REFUSED) or (
            "role " in message and "does not exist" in message
        ):
            return ErrorKind.AUTH
        if "database " in message and "does not exist" in message:
            return ErrorKind.CONFIG
        if "timeout expired" in message:
            return ErrorKind.TIMEOUT
        return ErrorKind.UNAVAILABLE
    if isinstance(orig, sqlite3.Error):
        return _sqlite_kind(orig)
    return ErrorKind.UNAVAILABLE


def _query_kind(error: sa_exc.DBAPIError) -> ErrorKind:
    orig = error.orig
    if isinstance(orig, psycopg.Error):
        if orig.sqlstate:
            return _sqlstate_kind(orig.sqlstate)
        # No SQLSTATE: the driver refused the statement itself (psycopg.ProgrammingError)
        # or the connection broke (OperationalError and the like).
        if isinstance(orig, psycopg.ProgrammingError | psycopg.NotSupportedError):
            return ErrorKind.CONFIG
        return ErrorKind.UNAVAILABLE
    if isinstance(orig, sqlite3.Error):
        return _sqlite_kind(orig)
    if isinstance(error, sa_exc.ProgrammingError):
        return ErrorKind.CONFIG
    return ErrorKind.UNAVAILABLE


def _sqlstate_kind(sqlstate: str) -> ErrorKind:
    """The report's kind for a PostgreSQL SQLSTATE."""
    kind = ErrorKind.UNAVAILABLE
    if sqlstate == "57014":  # query_canceled: statement_timeout
        kind = ErrorKind.TIMEOUT
    elif sqlstate == "42501" or sqlstate.startswith("28"):  # privilege, authorization
        kind = ErrorKind.AUTH
    elif sqlstate.startswith("22"):  # data exception: a value in the book's rows is bad
        kind = ErrorKind.MALFORMED
    elif sqlstate.startswith(("42", "3D", "3F", "0A", "21", "25", "26", "34")):
        # syntax/undefined object, unknown database or schema, unsupported feature,
        # cardinality, a write in a read-only transaction, bad statement or cursor name
        kind = ErrorKind.CONFIG
    return kind


def _sqlite_kind(error: sqlite3.Error) -> ErrorKind:
    code = getattr(error, "sqlite_errorcode", None)
    if not isinstance(code, int):
        if isinstance(error, sqlite3.ProgrammingError):
            return ErrorKind.CONFIG
        return ErrorKind.UNAVAILABLE
    primary = code & 0xFF
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_INTERRUPT):
        return ErrorKind.TIMEOUT
    if primary == _SQLITE_AUTH:
        return ErrorKind.AUTH
    if primary in _SQLITE_CONFIG_CODES:
        return ErrorKind.CONFIG
    return ErrorKind.UNAVAILABLE  # CANTOPEN, IOERR, CORRUPT, NOTADB, FULL …
