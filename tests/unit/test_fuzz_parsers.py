"""Fuzz tests (hypothesis) of every venue parser and of the JSON readers of recon's own documents.

Whatever a venue answers (any bytes, any JSON, its documented body with fields mutated, any
status and headers, a failing transport), a client ends in a snapshot (``dict[str, Decimal]``,
every value finite) or a :class:`~infra.venues.errors.VenueError`, never another exception. The
pure helpers, ``parse_amount`` and the report/cycle/outcome readers keep the same promise with
their own named errors. No error message repeats an amount or a secret planted in the input.

The strategies here are shared with ``test_fuzz_loaders.py``.
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Final

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, event, example, given, reject, settings
from hypothesis import strategies as st

from app.outcomes import outcome_from_json
from domain.amounts import MAX_FRACTION_DIGITS, MAX_MAGNITUDE, InvalidAmount, parse_amount
from domain.report import Cycle, ErrorKind, FetchError, Report
from domain.serialization import SerializationError, cycle_from_json, report_from_json
from infra.venues import binance, kraken
from infra.venues.binance import BinanceClient, WeightGuard
from infra.venues.coinbase import CoinbaseClient
from infra.venues.dydx import DydxClient
from infra.venues.errors import MalformedVenueResponse, VenueError, VenueRateLimited
from infra.venues.http import (
    RetryAfterUnit,
    VenueResponse,
    check_status,
    decode_json,
    parse_json,
    parse_retry_after,
    venue_error_code,
)
from infra.venues.kraken import KrakenClient

#: An amount no error message may repeat when the input carried it.
PLANTED_AMOUNT: Final = "987654.321"
#: A secret no error message may repeat when the input (or the configuration) carried it.
PLANTED_SECRET: Final = "PLANTED-fuzz-secret-7f3a9c0d"

#: Modest per-target budgets: the whole file runs in a few seconds.
FUZZ: Final = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
FUZZ_SMALL: Final = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

NOW: Final = 1_700_000_000.0


# --------------------------------------------------------------------------- JSON rendering


@dataclass(frozen=True, slots=True)
class Raw:
    """A JSON token written verbatim: numbers and escapes ``json.dumps`` would never produce."""

    text: str


@dataclass(frozen=True, slots=True)
class DupKeys:
    """A JSON object written with the given (possibly repeated) key/value pairs."""

    pairs: tuple[tuple[str, Any], ...]


def render(value: Any, *, ascii_only: bool = True) -> str:
    """``value`` as JSON text; :class:`Raw` verbatim, floats with their NaN/Infinity tokens."""
    if isinstance(value, Raw):
        return value.text
    if value is None or isinstance(value, bool | str | float):
        return json.dumps(value, ensure_ascii=ascii_only)
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(render(item, ascii_only=ascii_only) for item in value) + "]"
    pairs = value.pairs if isinstance(value, DupKeys) else tuple(value.items())
    members = (
        f"{json.dumps(str(key), ensure_ascii=ascii_only)}: {render(item, ascii_only=ascii_only)}"
        for key, item in pairs
    )
    return "{" + ", ".join(members) + "}"


@st.composite
def rendered(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """A value drawn from ``values`` as JSON bytes (ASCII-escaped or UTF-8, maybe with a BOM)."""
    text = render(draw(values), ascii_only=draw(st.booleans()))
    data = text.encode("utf-8")
    return b"\xef\xbb\xbf" + data if draw(st.integers(0, 19)) == 0 else data


@st.composite
def dumped(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """A value serialized by ``json.dumps`` itself, with and without ``allow_nan``."""
    value = draw(values)
    allow_nan = draw(st.booleans())
    try:
        text = json.dumps(value, allow_nan=allow_nan)
    except ValueError:  # a NaN/Infinity float with allow_nan=False
        text = json.dumps(value, allow_nan=True)
    return text.encode("utf-8")


# --------------------------------------------------------------------------- value strategies

#: Numbers no JSON encoder writes: huge, tiny, non-finite, over-long, and the planted amount.
RAW_NUMBERS: Final = (
    "1e400",
    "-1e400",
    "1e999999999",
    "-1e999999999",
    "9.99999999999999999999999999999999e999999",
    "1E-400",
    "1e-999999999",
    "-0",
    "-0.0",
    "NaN",
    "Infinity",
    "-Infinity",
    "123456789012345678901234567890",
    "0.0000000000000000000000000000000001",
    "1" + "0" * 5000,
    PLANTED_AMOUNT,
    "-" + PLANTED_AMOUNT,
    PLANTED_AMOUNT + "e30",
    PLANTED_AMOUNT + "e-40",
)
#: String escapes that decode to text some encoders refuse (lone surrogates, NUL).
RAW_STRINGS: Final = ('"\\ud800"', '"\\udfff x"', '"a\\u0000b"', '"\\ud83d\\ude00"')
#: Amount texts that are not valid amounts (or are, barely), many carrying the planted amount.
AMOUNT_JUNK_TEXT: Final = (
    "NaN",
    "nan",
    "sNaN",
    "-sNaN",
    "Infinity",
    "-Infinity",
    "inf",
    "1e400",
    "-1e400",
    "1e999999999",
    "9.99999999999999999999999999999999e999999",
    "1e-400",
    "-1",
    "-0.5",
    "-0",
    "0",
    "",
    " ",
    " 1 ",
    "1_000",
    "\u0661\u0662\u0663",
    "0x10",
    "1,5",
    "1.2.3",
    "1e",
    "+",
    "9" * 101,
    "1." + "1" * 40,
    "99999999999999999999.5",
    PLANTED_AMOUNT,
    "-" + PLANTED_AMOUNT,
    "+" + PLANTED_AMOUNT,
    " " + PLANTED_AMOUNT + " ",
    PLANTED_AMOUNT + "e400",
    PLANTED_AMOUNT + "e999999999",
    PLANTED_AMOUNT + "0" * 40 + "1",
    PLANTED_AMOUNT + "x",
    "\u2212" + PLANTED_AMOUNT,
    "x" * 10_000,
)
STRING_JUNK: Final = (
    "",
    " ",
    "null",
    "true",
    "\u0000",
    "\u202e",
    "\ufeff",
    "é",
    "🙂",
    "x" * 5000,
    "LONG",
    "SHORT",
    "OPEN",
    "BTC",
    "USDC",
    "EAPI:Invalid key",
    "<html><body>502 Bad Gateway</body></html>",
)

SCALARS: Final = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(STRING_JUNK),
)
#: Arbitrary JSON-like values (no planted amount in them).
JUNK: Final = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
#: Arbitrary JSON (for whole bodies), numbers of every size included.
JSON_VALUES: Final = st.recursive(
    st.one_of(
        SCALARS,
        st.integers(min_value=-(10**40), max_value=10**40),
        st.sampled_from(AMOUNT_JUNK_TEXT),
    ),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=25,
)
#: What an amount field can hold when it is not a valid amount.
AMOUNT_JUNK: Final = st.one_of(
    st.sampled_from(AMOUNT_JUNK_TEXT),
    st.sampled_from(RAW_NUMBERS).map(Raw),
    st.floats(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.booleans(),
    st.none(),
    st.just([]),
    st.just({}),
    st.just({"value": PLANTED_AMOUNT}),
)
#: Junk for venue bodies: a venue may put anything anywhere, the planted amount included.
VENUE_JUNK: Final = st.one_of(JUNK, AMOUNT_JUNK, st.sampled_from(RAW_STRINGS).map(Raw))


def amount_texts(*, signed: bool = False) -> st.SearchStrategy[str]:
    """Valid decimal strings, as venues write them."""
    low = -(10**12) if signed else 0
    return st.decimals(
        min_value=low, max_value=10**12, places=8, allow_nan=False, allow_infinity=False
    ).map(lambda d: format(d, "f"))


def amounts(*, signed: bool = False) -> st.SearchStrategy[Any]:
    """An amount field: mostly valid, sometimes the planted amount, sometimes junk."""
    valid = amount_texts(signed=signed)
    return st.one_of(valid, valid, valid, st.just(PLANTED_AMOUNT), AMOUNT_JUNK)


def valid_amounts(*, signed: bool = False) -> st.SearchStrategy[str]:
    """Only valid amount fields, the planted amount among them."""
    return st.one_of(amount_texts(signed=signed), st.just(PLANTED_AMOUNT))


def amount_fields(valid: bool, *, signed: bool = False) -> st.SearchStrategy[Any]:
    """:func:`valid_amounts` when ``valid``, else :func:`amounts`."""
    return valid_amounts(signed=signed) if valid else amounts(signed=signed)


def _roll(draw: st.DrawFn, rate: int) -> bool:
    return rate > 0 and draw(st.integers(0, 99)) < rate


def _mutate(draw: st.DrawFn, node: Any, rate: int, junk: st.SearchStrategy[Any]) -> Any:
    """``node`` with, at ``rate`` percent per step, values replaced, keys dropped or added,
    keys repeated and array items repeated."""
    if _roll(draw, rate):
        return draw(junk)
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if _roll(draw, rate):
                continue
            out[key] = _mutate(draw, value, rate, junk)
        if _roll(draw, rate):
            out[draw(st.text(max_size=8))] = draw(junk)
        if out and _roll(draw, rate):
            pairs = tuple(out.items())
            return DupKeys((*pairs, pairs[0]))
        return out
    if isinstance(node, list):
        items = [_mutate(draw, item, rate, junk) for item in node]
        if items and _roll(draw, rate):
            items.append(items[0])
        return items
    return node


@st.composite
def mutated(
    draw: st.DrawFn, documents: st.SearchStrategy[Any], junk: st.SearchStrategy[Any] = JUNK
) -> Any:
    """A document of ``documents``, untouched or mutated at a drawn rate."""
    document = draw(documents)
    rate = draw(st.sampled_from((0, 0, 2, 5, 15)))
    return _mutate(draw, document, rate, junk)


#: Bodies that stress the decoder itself.
EDGE_BODIES: Final = (
    b"",
    b" ",
    b"null",
    b"[]",
    b"{}",
    b"\xef\xbb\xbf{}",
    b"[" * 100_000,
    b"[" * 5_000 + b"]" * 5_000,
    b'{"a":' * 3_000 + b"1" + b"}" * 3_000,
    b'{"a": 1, "a": 2}',
    b'{"balances": [], "balances": []}',
    b'{"a": NaN}',
    b'{"a": -Infinity}',
    b'{"a": 1e999999999}',
    b'{"code": 1e999999999}',
    b'{"code": -1e999999999, "msg": "x"}',
    b'{"error": 1e999999999}',
    b'{"errors": [{"code": 1e999999999}]}',
    b'{"a": "\\ud800"}',
    b'{"a": "\xff\xfe"}',
    '{"a": 1}'.encode("utf-16"),
    '{"a": 1}'.encode("utf-32"),
    b"\x00" * 64,
    b"<html><body>502 Bad Gateway</body></html>",
    b'{"balances": [{"asset": "BTC", "free": "1", "locked": "0"}]',
)


def bodies(documents: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Whole response bodies: near-valid documents, arbitrary JSON, bytes and decoder edges."""
    near_valid = rendered(mutated(documents, VENUE_JUNK))
    return st.one_of(
        near_valid,
        near_valid,
        near_valid,
        dumped(JSON_VALUES),
        rendered(JSON_VALUES),
        st.binary(max_size=200),
        st.sampled_from(EDGE_BODIES),
    )


# --------------------------------------------------------------------------- responses

HEADER_NAMES: Final = (
    b"Retry-After",
    b"X-MBX-USED-WEIGHT-1M",
    b"Content-Type",
    b"Content-Encoding",
    b"RateLimit-Reset",
    b"Content-Length",
)
HEADER_JUNK: Final = (
    "0",
    "1",
    "-1",
    "1.5",
    "1e400",
    "NaN",
    "inf",
    "999999999999",
    "9999999999999",
    "0.000001",
    " 7 ",
    "0x10",
    "Wed, 21 Oct 2015 07:28:00 GMT",
    "20",
    "1200",
    "999999999",
    "1" * 40,
    "gzip",
    "deflate",
    "br",
    "zstd",
    "identity",
    "gzip, deflate",
    "application/json",
    "text/html",
    "application/json; charset=utf-16",
    "\u0663",
    "\u00b2",
    PLANTED_SECRET,
    PLANTED_AMOUNT,
)
HEADER_VALUES: Final = st.one_of(
    st.sampled_from(HEADER_JUNK).map(lambda text: text.encode("utf-8")),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20).map(
        lambda text: text.encode("ascii")
    ),
    st.binary(max_size=16),
)
HEADERS: Final = st.lists(st.tuples(st.sampled_from(HEADER_NAMES), HEADER_VALUES), max_size=4)
STATUSES: Final = st.one_of(
    st.just(200),
    st.sampled_from((200, 201, 204, 299, 301, 400, 401, 403, 404, 408, 418, 429, 500, 503)),
    st.integers(min_value=100, max_value=599),
)
TRANSPORT_FAILURES: Final[tuple[type[httpx.RequestError], ...]] = (
    httpx.ConnectError,
    httpx.ReadTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.DecodingError,
)


@dataclass(frozen=True, slots=True)
class Reply:
    """One fuzzed answer of the venue: a response, or a transport failure."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    gzipped: bool = False
    failure: type[httpx.RequestError] | None = None

    def respond(self, request: httpx.Request) -> httpx.Response:
        if self.failure is not None:
            raise self.failure("fuzzed transport failure", request=request)
        headers = list(self.headers)
        body = self.body
        if self.gzipped:
            body = gzip.compress(body)
            headers.append((b"Content-Encoding", b"gzip"))
        return httpx.Response(self.status, content=body, headers=headers)


#: Headers a healthy venue sends.
BENIGN_HEADERS: Final = st.lists(
    st.sampled_from(
        (
            (b"Content-Type", b"application/json"),
            (b"X-MBX-USED-WEIGHT-1M", b"20"),
            (b"X-MBX-USED-WEIGHT-1M", b"1190"),
            (b"RateLimit-Remaining", b"99"),
        )
    ),
    max_size=2,
)


@st.composite
def replies(
    draw: st.DrawFn, valid: st.SearchStrategy[Any], documents: st.SearchStrategy[Any]
) -> Reply:
    """A reply: one time in three a healthy 200 with a ``valid`` document, otherwise anything
    :func:`bodies` of ``documents`` and the status and header strategies give."""
    if draw(st.integers(0, 2)) == 0:
        body = draw(rendered(valid))
        return Reply(status=200, body=body, headers=tuple(draw(BENIGN_HEADERS)))
    failure = draw(st.sampled_from(TRANSPORT_FAILURES)) if draw(st.integers(0, 24)) == 0 else None
    return Reply(
        status=draw(STATUSES),
        body=draw(bodies(documents)),
        headers=tuple(draw(HEADERS)),
        gzipped=draw(st.integers(0, 9)) == 0,
        failure=failure,
    )


def reply_sequence(
    valid: st.SearchStrategy[Any], *documents: st.SearchStrategy[Any]
) -> st.SearchStrategy[list[Reply]]:
    """One to three :func:`replies`, answered in order (the last one repeats)."""
    return st.lists(replies(valid, st.one_of(*documents)), min_size=1, max_size=3)


def transport(sequence: Sequence[Reply]) -> httpx.MockTransport:
    """A transport answering ``sequence`` in order, repeating its last reply."""
    counter = itertools.count()

    def handler(request: httpx.Request) -> httpx.Response:
        return sequence[min(next(counter), len(sequence) - 1)].respond(request)

    return httpx.MockTransport(handler)


# --------------------------------------------------------------------------- assertions


def assert_clean(message: str, secrets: Iterable[str] = ()) -> None:
    """``message`` repeats neither the planted amount nor any secret."""
    assert PLANTED_AMOUNT not in message
    assert PLANTED_SECRET not in message
    for secret in secrets:
        assert secret not in message


def assert_snapshot(balances: object) -> None:
    """``balances`` is ``dict[str, Decimal]`` with every value finite."""
    assert isinstance(balances, dict)
    for asset, amount in balances.items():
        assert isinstance(asset, str)
        assert isinstance(amount, Decimal)
        assert amount.is_finite()


def assert_venue_error(error: VenueError, secrets: Iterable[str] = ()) -> None:
    """A venue error: a report kind, a clean message, and a usable Retry-After."""
    assert isinstance(error.kind, ErrorKind)
    assert_clean(str(error), secrets)
    if isinstance(error, VenueRateLimited) and error.retry_after is not None:
        assert math.isfinite(error.retry_after)
        assert error.retry_after >= 0


def fetch_outcome(fetch: Callable[[], dict[str, Decimal]], secrets: Iterable[str] = ()) -> None:
    """Call ``fetch``: a snapshot or a VenueError; anything else propagates and fails."""
    try:
        balances = fetch()
    except VenueError as exc:
        event(f"error: {type(exc).__name__}")
        assert_venue_error(exc, secrets)
        return
    event("snapshot" if balances else "empty snapshot")
    assert_snapshot(balances)


def assert_no_float(value: Any) -> None:
    """Exact JSON: no float anywhere in ``value`` (walked without recursion: it may be deep)."""
    stack = [value]
    while stack:
        item = stack.pop()
        assert not isinstance(item, float)
        if isinstance(item, Decimal):
            assert item.is_finite()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


# --------------------------------------------------------------------------- venue documents

COINBASE_TYPES: Final = (
    "ACCOUNT_TYPE_CRYPTO",
    "ACCOUNT_TYPE_FIAT",
    "ACCOUNT_TYPE_VAULT",
    "FIAT",
    "ACCOUNT_TYPE_PERP_FUTURES",
)


@st.composite
def coinbase_account(draw: st.DrawFn, valid: bool = False) -> dict[str, Any]:
    """One Account object of the reference's shape."""
    currency = draw(st.sampled_from(("BTC", "ETH", "USD", "USDC", "SOL")))
    return {
        "uuid": "8bfc20d7-f7c6-4422-bf07-8243ca4169fe",
        "name": f"{currency} Wallet",
        "currency": currency,
        "available_balance": {"value": draw(amount_fields(valid)), "currency": currency},
        "default": True,
        "active": True,
        "created_at": "2023-01-04T06:20:06.456Z",
        "updated_at": "2024-03-01T10:00:00.000Z",
        "deleted_at": None,
        "type": draw(st.sampled_from(COINBASE_TYPES)),
        "ready": True,
        "hold": {"value": draw(amount_fields(valid)), "currency": currency},
        "retail_portfolio_id": "b87a2d3f-8a1e-49b3-a4ea-402d8c389aca",
        "platform": "ACCOUNT_PLATFORM_CONSUMER",
    }


def coinbase_page(valid: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """One page of accounts (``valid``: every amount valid)."""
    return st.fixed_dictionaries(
        {
            "accounts": st.lists(coinbase_account(valid), max_size=3),
            "has_next": st.sampled_from((False, False, True)),
            "cursor": st.one_of(
                st.sampled_from(("", "789100", "c-2", "c-3")),
                st.sampled_from(RAW_STRINGS).map(Raw),
            ),
            "size": st.integers(0, 3),
        }
    )


COINBASE_ERROR: Final = st.fixed_dictionaries(
    {
        "error": st.sampled_from(("PERMISSION_DENIED", "UNAUTHENTICATED", PLANTED_SECRET)),
        "message": st.just(f"key {PLANTED_SECRET} holds {PLANTED_AMOUNT}"),
        "error_details": st.just(PLANTED_AMOUNT),
    }
)

DYDX_ADDRESS: Final = "dydx1n88uc38xhjgxzw9nwre4ep2c8ga4fjxc565lnf"
SIDES: Final = st.sampled_from(("LONG", "SHORT"))


@st.composite
def dydx_document(draw: st.DrawFn, valid: bool = False) -> dict[str, Any]:
    """A subaccount response, wrapped or not, of the reference's shape."""
    assets = {}
    for symbol in draw(st.lists(st.sampled_from(("USDC", "BTC", "ETH")), unique=True, max_size=3)):
        assets[symbol] = {
            "symbol": symbol,
            "side": draw(SIDES),
            "size": draw(amount_fields(valid)),
            "assetId": "0",
            "subaccountNumber": 0,
        }
    perpetuals = {}
    markets = st.sampled_from(("BTC-USD", "ETH-USD", "SOL-USD"))
    for market in draw(st.lists(markets, unique=True, max_size=3)):
        side = draw(SIDES)
        size = draw(amount_fields(valid))
        if side == "SHORT" and isinstance(size, str) and not size.startswith("-"):
            size = "-" + size  # the indexer signs SHORT perpetual sizes
        perpetuals[market] = {
            "market": market,
            "status": draw(st.sampled_from(("OPEN", "OPEN", "CLOSED", "LIQUIDATED"))),
            "side": side,
            "size": size,
            "maxSize": size,
            "entryPrice": "3500",
            "exitPrice": None,
            "realizedPnl": "12.4",
            "unrealizedPnl": "150",
            "createdAt": "2025-10-22T08:34:05.883Z",
            "createdAtHeight": "52228825",
            "closedAt": None,
            "sumOpen": "2",
            "sumClose": "0.5",
            "netFunding": "-3.21",
            "subaccountNumber": 0,
        }
    subaccount = {
        "address": DYDX_ADDRESS,
        "subaccountNumber": 0,
        "equity": draw(amount_fields(valid)),
        "freeCollateral": "9120.5",
        "openPerpetualPositions": perpetuals,
        "assetPositions": assets,
        "marginEnabled": True,
        "updatedAtHeight": "52228833",
        "latestProcessedBlockHeight": "52246761",
    }
    return {"subaccount": subaccount} if draw(st.booleans()) else subaccount


DYDX_ERROR: Final = st.fixed_dictionaries(
    {
        "errors": st.just(
            [
                {
                    "code": "GEOBLOCKED",
                    "msg": f"No subaccount found with address {PLANTED_SECRET} {PLANTED_AMOUNT}",
                }
            ]
        )
    }
)

KRAKEN_CODES: Final = (
    "EAPI:Invalid key",
    "EAPI:Invalid signature",
    "EAPI:Invalid nonce",
    "EGeneral:Permission denied",
    "EGeneral:Temporary lockout",
    "EAPI:Rate limit exceeded",
    "EGeneral:Too many requests",
    "EService:Throttled:1616492376",
    "EService: Throttled: 1616492376.5",
    "EService:Throttled:999999999999",
    "EService:Throttled:1e400",
    "EService:Throttled:" + PLANTED_AMOUNT,
    "EService:Unavailable",
    "EService:Busy",
    "EGeneral:Internal error",
    "EGeneral:Invalid arguments:ordertype",
    "EGeneral:Invalid arguments:" + PLANTED_AMOUNT,
    "EQuery:Unknown asset pair",
    "EFunding:" + PLANTED_SECRET,
    "WGeneral:Deprecated",
    "E:",
    "W :",
    "X:nope",
    "",
    "E",
)
KRAKEN_ASSETS: Final = (
    "XXBT",
    "ZUSD",
    "XETH",
    "USDT",
    "DOT.S",
    "ETH.F",
    "USD.M",
    "XBT.M",
    "USD.HOLD",
    "XTZ",
    "LUNA2",
)


def kraken_document(valid: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """A Balance body (``valid``: no error, every amount valid)."""
    errors = st.lists(st.one_of(st.sampled_from(KRAKEN_CODES), st.text(max_size=20)), max_size=4)
    return st.fixed_dictionaries(
        {
            "error": st.just([]) if valid else st.one_of(st.just([]), st.just([]), errors),
            "result": st.dictionaries(
                st.sampled_from(KRAKEN_ASSETS), amount_fields(valid), max_size=4
            ),
        }
    )


KRAKEN_DOCS: Final = kraken_document()


@st.composite
def binance_document(draw: st.DrawFn, valid: bool = False) -> dict[str, Any]:
    """An account body of the reference's shape."""
    entries = st.fixed_dictionaries(
        {
            "asset": st.sampled_from(("BTC", "USDT", "ETH", "BNB")),
            "free": amount_fields(valid),
            "locked": amount_fields(valid),
        }
    )
    return {
        "makerCommission": 10,
        "takerCommission": 10,
        "commissionRates": {"maker": "0.00100000", "taker": "0.00100000"},
        "canTrade": True,
        "accountType": "SPOT",
        "balances": draw(st.lists(entries, max_size=4)),
        "permissions": ["SPOT"],
        "uid": 354937868,
    }


BINANCE_ERROR: Final = st.fixed_dictionaries(
    {
        "code": st.one_of(
            st.sampled_from((-1003, -1021, -1022, -2014, -2015, -1121, 0, 99_999, 100_000)),
            st.sampled_from(("-2015.0", "1e999999999", "-1e999999999", "NaN", "1e-999")).map(Raw),
            JUNK,
        ),
        "msg": st.just(f"Invalid API-key {PLANTED_SECRET}, balance {PLANTED_AMOUNT}"),
    }
)


# --------------------------------------------------------------------------- venue clients


@pytest.fixture(scope="module")
def coinbase_pem() -> str:
    """A fresh P-256 CDP private key, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


@FUZZ
@example(  # found: a lone-surrogate cursor escaped as UnicodeEncodeError
    sequence=[Reply(200, b'{"accounts": [], "has_next": true, "cursor": "\\ud800"}', ())]
)
@example(  # found: 1e999999999 escaped parse_amount as decimal.Overflow
    sequence=[
        Reply(
            200,
            b'{"accounts": [{"currency": "BTC", "available_balance": {"value": "1e999999999"},'
            b' "hold": {"value": "0"}}], "has_next": false, "cursor": ""}',
            (),
        )
    ]
)
@example(sequence=[Reply(301, b'{"code": 10e999999}', ())])  # found: decimal.Overflow
@given(sequence=reply_sequence(coinbase_page(valid=True), coinbase_page(), COINBASE_ERROR))
def test_coinbase_client_ends_in_a_snapshot_or_a_venue_error(
    coinbase_pem: str, sequence: list[Reply]
) -> None:
    """Any Coinbase pages, statuses and headers end in a snapshot or a VenueError."""
    key_line = coinbase_pem.splitlines()[1]
    with httpx.Client(transport=transport(sequence)) as http:
        client = CoinbaseClient(
            http,
            base_url="https://api.coinbase.test",
            key_name="organizations/org-1/apiKeys/key-1",
            private_key_pem=coinbase_pem,
            timeout=5.0,
            clock=lambda: NOW,
        )
        fetch_outcome(client.fetch_balances, secrets=(key_line,))


@FUZZ
@given(sequence=reply_sequence(dydx_document(valid=True), dydx_document(), DYDX_ERROR))
def test_dydx_client_ends_in_a_snapshot_or_a_venue_error(sequence: list[Reply]) -> None:
    """Any dYdX indexer answer ends in a snapshot or a VenueError."""
    with httpx.Client(transport=transport(sequence)) as http:
        client = DydxClient(
            http,
            base_url="https://indexer.dydx.test",
            address=DYDX_ADDRESS,
            subaccount=0,
            timeout=5.0,
        )
        fetch_outcome(client.fetch_balances)


KRAKEN_KEY: Final = "kraken-fuzz-public-key+/="
KRAKEN_SECRET: Final = "UExBTlRFRC1rcmFrZW4tZnV6ei1zZWNyZXQtNzc3MTIz"


@FUZZ
@given(sequence=reply_sequence(kraken_document(valid=True), KRAKEN_DOCS))
def test_kraken_client_ends_in_a_snapshot_or_a_venue_error(sequence: list[Reply]) -> None:
    """Any Kraken Balance answer ends in a snapshot or a VenueError."""
    nonces = itertools.count(1)
    with httpx.Client(transport=transport(sequence)) as http:
        client = KrakenClient(
            http,
            base_url="https://api.kraken.test",
            api_key=KRAKEN_KEY,
            api_secret=KRAKEN_SECRET,
            timeout=5.0,
            nonce=lambda: next(nonces),
            clock=lambda: NOW,
        )
        fetch_outcome(client.fetch_balances, secrets=(KRAKEN_KEY, KRAKEN_SECRET))


class FakeTime:
    """A clock that only moves when the guard sleeps (nothing really waits)."""

    def __init__(self) -> None:
        self.now = NOW

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert math.isfinite(seconds)
        assert 0 <= seconds <= 60
        self.now += seconds


BINANCE_KEY: Final = "binanceFuzzApiKey0123456789"
BINANCE_SECRET: Final = "binanceFuzzSecret9876543210PLANTED"


@FUZZ
@given(sequence=reply_sequence(binance_document(valid=True), binance_document(), BINANCE_ERROR))
def test_binance_client_ends_in_a_snapshot_or_a_venue_error(sequence: list[Reply]) -> None:
    """Every one of a run of Binance answers ends in a snapshot or a VenueError, and the weight
    guard never asks to wait a negative, infinite or over-a-minute time."""
    fake = FakeTime()
    guard = WeightGuard(clock=fake.clock, sleep=fake.sleep)
    with httpx.Client(transport=transport(sequence)) as http:
        client = BinanceClient(
            http,
            base_url="https://api.binance.test",
            api_key=BINANCE_KEY,
            api_secret=BINANCE_SECRET,
            timeout=5.0,
            clock=fake.clock,
            weight_guard=guard,
        )
        for _ in sequence:
            fetch_outcome(client.fetch_balances, secrets=(BINANCE_KEY, BINANCE_SECRET))


# --------------------------------------------------------------------------- pure helpers

ANY_BODY: Final = st.one_of(
    bodies(
        st.one_of(
            coinbase_page(),
            COINBASE_ERROR,
            dydx_document(),
            DYDX_ERROR,
            KRAKEN_DOCS,
            binance_document(),
            BINANCE_ERROR,
        )
    ),
    st.binary(max_size=300),
)


@FUZZ
@given(body=ANY_BODY, status=STATUSES)
def test_parse_json_is_exact_json_or_malformed(body: bytes, status: int) -> None:
    """parse_json returns JSON with only Decimal numbers (all finite), or MalformedVenueResponse."""
    try:
        value = parse_json(body, venue="fuzz", status=status)
    except MalformedVenueResponse as exc:
        assert_venue_error(exc)
        return
    assert_no_float(value)


@FUZZ
@given(
    value=st.one_of(
        st.none(),
        st.text(max_size=30),
        st.sampled_from(HEADER_JUNK),
        st.from_regex(r"\A\s*\d{1,14}(\.\d{1,8})?\s*\Z"),
    ),
    unit=st.sampled_from(RetryAfterUnit),
)
def test_parse_retry_after_is_none_or_a_finite_wait(
    value: str | None, unit: RetryAfterUnit
) -> None:
    """parse_retry_after gives None or a finite, non-negative number of seconds."""
    seconds = parse_retry_after(value, unit)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@FUZZ
@example(status=403, headers=[], body=b'{"errors": [{"code": 1e999999999}]}')  # found: Overflow
@given(status=STATUSES, headers=HEADERS, body=ANY_BODY)
def test_check_status_and_decode_json_end_in_a_value_or_a_venue_error(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    """check_status raises a VenueError exactly for non-2xx; decode_json gives exact JSON or
    MalformedVenueResponse; venue_error_code is None or a plain identifier, never raising."""
    response = VenueResponse(status, httpx.Headers(headers), body)
    code = venue_error_code(body)
    assert code is None or re.fullmatch(r"[A-Za-z][A-Za-z_.:\-]{0,63}|code -?\d{1,5}", code)
    try:
        check_status(response, venue="fuzz", rate_limit_statuses=(418, 429))
    except VenueError as exc:
        assert not 200 <= status < 300
        assert_venue_error(exc)
    else:
        assert 200 <= status < 300
    try:
        assert_no_float(decode_json(response, venue="fuzz"))
    except MalformedVenueResponse as exc:
        assert_venue_error(exc)


@FUZZ
@given(result=mutated(KRAKEN_DOCS.map(lambda doc: doc["result"]), VENUE_JUNK))
def test_kraken_balances_from_result_is_a_snapshot_or_malformed(result: Any) -> None:
    """balances_from_result maps any result object to a snapshot or MalformedVenueResponse."""
    result = venue_decoded(result)
    if not isinstance(result, dict):
        return
    try:
        balances = kraken.balances_from_result(result)
    except MalformedVenueResponse as exc:
        assert_venue_error(exc)
        return
    assert_snapshot(balances)
    assert all(amount >= 0 for amount in balances.values())


@FUZZ
@given(
    codes=st.lists(
        st.one_of(
            st.sampled_from(KRAKEN_CODES),
            st.text(max_size=30).map(lambda text: "E" + text),
            st.from_regex(r"\AE[A-Za-z]{1,8}\s*:\s*[A-Za-z0-9 .:]{0,20}\Z"),
        ),
        max_size=5,
    ),
    now=st.floats(min_value=0, max_value=4e9),
)
def test_kraken_error_for_always_names_a_venue_error(codes: list[str], now: float) -> None:
    """error_for returns (never raises) a VenueError with a clean message for any error codes."""
    error = kraken.error_for(codes, now=now)
    assert isinstance(error, VenueError)
    assert_venue_error(error)


@FUZZ
@given(payload=mutated(KRAKEN_DOCS, VENUE_JUNK))
def test_kraken_raise_for_errors_returns_or_raises_a_venue_error(payload: Any) -> None:
    """raise_for_errors on any Balance object returns or raises a VenueError."""
    payload = venue_decoded(payload)
    if not isinstance(payload, dict):
        return
    try:
        kraken.raise_for_errors(payload, now=NOW)
    except VenueError as exc:
        assert_venue_error(exc)


@FUZZ
@given(
    body=st.one_of(
        JSON_VALUES,
        mutated(binance_document(), VENUE_JUNK),
        mutated(BINANCE_ERROR, VENUE_JUNK),
    )
)
def test_binance_account_totals_is_a_snapshot_or_malformed(body: Any) -> None:
    """account_totals maps any decoded body to a zero-free snapshot, or MalformedVenueResponse."""
    try:
        balances = binance.account_totals(venue_decoded(body))
    except MalformedVenueResponse as exc:
        assert_venue_error(exc)
        return
    assert_snapshot(balances)
    assert all(amount > 0 for amount in balances.values())


@FUZZ
@example(body=b'{"code": -1e999999999}', headers=[])  # found: decimal.Overflow
@given(body=ANY_BODY, headers=HEADERS)
def test_binance_error_code_and_used_weight_are_none_or_plain_integers(
    body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """error_code and used_weight never raise: None, or a bounded code / a non-negative weight."""
    code = binance.error_code(body)
    assert code is None or (type(code) is int and abs(code) < 100_000)
    weight = binance.used_weight(httpx.Headers(headers))
    assert weight is None or (type(weight) is int and weight >= 0)


# --------------------------------------------------------------------------- amounts


@FUZZ
@example(value="9.99999999999999999999999999999999e999999", allow_negative=True)  # found
@example(value=Decimal("-1e999999999"), allow_negative=True)  # found: decimal.Overflow
@given(
    value=st.one_of(
        st.text(max_size=40),
        st.sampled_from(AMOUNT_JUNK_TEXT),
        amount_texts(signed=True),
        st.from_regex(r"\A[-+]?\d{0,25}(\.\d{0,35})?([eE][-+]?\d{1,12})?\Z"),
        st.integers(),
        st.sampled_from((10**25, -(10**5000), 2**64)),
        st.decimals(),
        st.sampled_from(RAW_NUMBERS).map(Decimal),
        st.floats(),
        st.booleans(),
        st.none(),
        JUNK,
    ),
    allow_negative=st.booleans(),
)
def test_parse_amount_is_a_bounded_decimal_or_invalid_amount(
    value: object, allow_negative: bool
) -> None:
    """parse_amount gives a finite, bounded Decimal or InvalidAmount, never repeating the value."""
    try:
        amount = parse_amount(value, allow_negative=allow_negative)
    except InvalidAmount as exc:
        assert_clean(str(exc))
        return
    assert isinstance(amount, Decimal)
    assert amount.is_finite()
    assert -MAX_MAGNITUDE < amount < MAX_MAGNITUDE
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)
    assert -exponent <= MAX_FRACTION_DIGITS
    assert allow_negative or amount >= 0


# --------------------------------------------------------------------------- recon's own JSON

TIMESTAMPS: Final = st.one_of(
    st.sampled_from(
        (
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00+00:00",
            "2024-05-01T12:00:00.123456+02:00",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "2024-05-01T12:00:00",
            "2024-13-01T00:00:00Z",
            "2024-05-01",
            "",
            "now",
        )
    ),
    st.datetimes(
        timezones=st.sampled_from(
            (UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)))
        )
    ).map(datetime.isoformat),
)
ASSETS: Final = st.sampled_from(("BTC", "ETH", "USDC", "ETH/USD:USDC"))
KINDS: Final = st.sampled_from([kind.value for kind in ErrorKind] + ["nope", ""])


def balances_json() -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(ASSETS, amounts(signed=True), max_size=3)


ERROR_JSON: Final = st.fixed_dictionaries(
    {"kind": KINDS, "message": st.sampled_from(("coinbase: timed out", ""))}
)
DISCREPANCY_JSON: Final = st.fixed_dictionaries(
    {
        "type": st.sampled_from(("precision", "missing", "mismatch", "other")),
        "asset": ASSETS,
        "local": amounts(signed=True),
        "exchange": amounts(signed=True),
        "diff": amounts(signed=True),
        "value_usd": st.one_of(st.none(), amounts()),
        "severity": st.sampled_from(("INFO", "WARNING", "ERROR", "CRITICAL", "FATAL")),
    },
    optional={"missing_from": st.sampled_from(("local", "exchange", "neither"))},
)
RECOVERY_JSON: Final = st.fixed_dictionaries(
    {
        "status": st.sampled_from(("SUCCESS", "FAILED", "MAYBE")),
        "checked_at": TIMESTAMPS,
        "found_status": st.sampled_from((None, "SUCCESS", "WARNING", "BAD")),
        "discrepancies": st.lists(DISCREPANCY_JSON, max_size=2),
        "error": st.one_of(st.none(), ERROR_JSON),
    }
)
REPORT_JSON: Final = st.fixed_dictionaries(
    {
        "reconciliation_id": st.just("r-1"),
        "cycle_id": st.just("c-1"),
        "account_id": st.just("cb-main"),
        "exchange": st.just("coinbase"),
        "reconciled_at": TIMESTAMPS,
        "status": st.sampled_from(("SUCCESS", "WARNING", "ERROR", "CRITICAL", "BAD")),
        "error": st.one_of(st.none(), st.none(), ERROR_JSON),
        "local_balances": balances_json(),
        "exchange_balances": balances_json(),
        "discrepancies": st.lists(DISCREPANCY_JSON, max_size=2),
        "recovery": st.one_of(st.none(), RECOVERY_JSON),
    }
)
CYCLE_JSON: Final = st.fixed_dictionaries(
    {
        "cycle_id": st.just("c-1"),
        "started_at": TIMESTAMPS,
        "finished_at": TIMESTAMPS,
        "status": st.sampled_from(("SUCCESS", "ERROR")),
        "reports": st.lists(REPORT_JSON, max_size=2),
    }
)
OUTCOME_JSON: Final = st.one_of(
    st.fixed_dictionaries({"balances": balances_json()}),
    st.fixed_dictionaries({"error": st.one_of(st.none(), ERROR_JSON)}),
)


def plain(value: Any) -> Any:
    """A mutated document as the plain values ``json.loads`` gives (no Raw/DupKeys markers)."""
    if not _has_markers(value):
        return value
    text = render(value)
    try:
        return json.loads(text)
    except ValueError:  # an integer past int()'s digit limit
        return json.loads(text, parse_int=Decimal)


def venue_decoded(value: Any) -> Any:
    """What :func:`parse_json` makes of ``value`` rendered (bodies it refuses are rejected)."""
    try:
        return parse_json(render(value).encode("utf-8"), venue="fuzz", status=200)
    except MalformedVenueResponse:
        reject()


def _has_markers(value: Any) -> bool:
    if isinstance(value, Raw | DupKeys):
        return True
    if isinstance(value, dict):
        return any(_has_markers(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_markers(item) for item in value)
    return False


def documents(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Near-valid documents of ``strategy`` (mutated with planted-free junk) or any JSON."""
    return st.one_of(mutated(strategy), mutated(strategy), JSON_VALUES).map(plain)


@FUZZ
@given(data=documents(OUTCOME_JSON))
def test_outcome_from_json_is_an_outcome_or_a_serialization_error(data: Any) -> None:
    """outcome_from_json gives balances or a FetchError, or SerializationError."""
    try:
        outcome = outcome_from_json(data)
    except SerializationError as exc:
        assert_clean(str(exc))
        return
    if not isinstance(outcome, FetchError):
        assert_snapshot(outcome)


@FUZZ_SMALL
@example(  # found: OverflowError converting year 1 at +01:00 to UTC
    data={
        "reconciliation_id": "r-1",
        "cycle_id": "c-1",
        "account_id": "a",
        "exchange": "coinbase",
        "reconciled_at": "0001-01-01T00:00:00+01:00",
        "local_balances": {},
        "exchange_balances": {},
        "discrepancies": [],
    }
)
@given(data=documents(REPORT_JSON))
def test_report_from_json_is_a_report_or_a_serialization_error(data: Any) -> None:
    """report_from_json gives a Report or SerializationError, never repeating an amount."""
    try:
        report = report_from_json(data)
    except SerializationError as exc:
        assert_clean(str(exc))
        return
    assert isinstance(report, Report)


@FUZZ_SMALL
@example(  # found: OverflowError converting 9999-12-31 at -01:00 to UTC
    data={
        "cycle_id": "c-1",
        "started_at": "9999-12-31T23:59:59-01:00",
        "finished_at": "9999-12-31T23:59:59-01:00",
        "reports": [],
    }
)
@given(data=documents(CYCLE_JSON))
def test_cycle_from_json_is_a_cycle_or_a_serialization_error(data: Any) -> None:
    """cycle_from_json gives a Cycle or SerializationError, never repeating an amount."""
    try:
        cycle = cycle_from_json(data)
    except SerializationError as exc:
        assert_clean(str(exc))
        return
    assert isinstance(cycle, Cycle)
