"""Binance Spot on the sandbox: ``GET /api/v3/account`` with Binance's real auth checks, error
bodies, weight headers and 429-then-418 behaviour, plus the public ``exchangeInfo``,
``ticker/price``, ``time`` and ``ping`` routes.

Auth, as the reference describes it: ``X-MBX-APIKEY`` names a scenario account (missing or not
printable: 401 ``-2014``; unknown: 401 ``-2015``); ``signature`` is recomputed as hex
HMAC-SHA256 under the account's secret over the exact received query string without its
``signature`` parameter, followed by the body, and compared case-insensitively (mismatch: 400
``-1022``, the status real Binance sends for it; the docs pin none); then the timing rule
``timestamp < serverTime + 1000`` and ``serverTime − timestamp ≤ recvWindow`` (else 400
``-1021``). ``timestamp`` may be in ms or µs; ``recvWindow`` defaults to 5000 and may carry
three decimals, at most 60000.

Limits count per client IP, as on Binance. ``[rate_limits.binance]`` in the scenario is the
IP's RAW_REQUESTS limit (``requests`` per ``window_ms``, every route counted): the first
request past it gets 429 with ``Retry-After`` in seconds and ``{"code": -1003}``, and any
further request in that window 418 (the IP ban for continuing after a 429) with Retry-After.
Every response carries ``X-MBX-USED-WEIGHT-<interval>`` (``-1M`` for a 60 s window): the
request weight the IP used in the current window (account and exchangeInfo 20, one ticker 2,
all tickers 4, time and ping 1). Without a Binance limit nothing is refused and the header
counts per minute (a count that :meth:`SandboxState.reset` does not clear).

Faults (account route only, after auth): ``status_5xx`` (JSON ``-1001`` or HTML),
``rate_limit`` (429 ``-1003``, Retry-After seconds), ``auth`` (401 ``-2015``), ``timeout``,
``reset``, ``malformed`` (HTML 200, truncated JSON, ``NaN`` or negative ``free``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from decimal import Context, Decimal, InvalidOperation
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from infra.sandbox.scenario import BinanceAccount, Fault, FaultKind, RateLimit
from infra.sandbox.state import (
    RateVerdict,
    ResetConnection,
    SandboxState,
    VenueModule,
    WindowLimiter,
    html_error,
    reason_phrase,
    truncate,
)

VENUE: Final = "binance"
ACCOUNT_PATH: Final = "/api/v3/account"
EXCHANGE_INFO_PATH: Final = "/api/v3/exchangeInfo"
TICKER_PRICE_PATH: Final = "/api/v3/ticker/price"
TIME_PATH: Final = "/api/v3/time"
PING_PATH: Final = "/api/v3/ping"
ACCOUNT_WEIGHT: Final = 20
EXCHANGE_INFO_WEIGHT: Final = 20
TICKER_WEIGHT_ONE: Final = 2
TICKER_WEIGHT_MANY: Final = 4
TIME_WEIGHT: Final = 1
DEFAULT_RECV_WINDOW_MS: Final = Decimal(5000)
MAX_RECV_WINDOW_MS: Final = Decimal(60_000)
#: Binance's documented REQUEST_WEIGHT limit, shown by exchangeInfo (not enforced here).
NOMINAL_WEIGHT_LIMIT: Final = 6000
#: Without a scenario limit, the window the weight header counts over.
_HEADER_WINDOW: Final = RateLimit(requests=1_000_000_000, window_ms=60_000)
#: Quote assets the public routes list for every priced base asset (USD marks, 1:1).
QUOTES: Final = ("USDT", "USDC")
#: Assets listed with zero balances when ``omitZeroBalances`` is not true (Binance lists all).
ZERO_PADDING: Final = ("BTC", "ETH", "BNB", "USDT", "LTC")
_UPDATE_TIME: Final = 1_730_000_000_000
_QUANTUM: Final = Decimal("1e-8")
_WIDE: Final = Context(prec=80)
_TIMESTAMP = re.compile(r"[0-9]{1,20}")
_RECV_WINDOW = re.compile(r"[0-9]{1,5}(\.[0-9]{1,3})?")
_API_KEY = re.compile(r"[!-~]{1,512}")
_SYMBOL = re.compile(r"[A-Z0-9\-_.]{1,20}")

MSG_TIMESTAMP_OLD: Final = "Timestamp for this request is outside of the recvWindow."
MSG_TIMESTAMP_AHEAD: Final = "Timestamp for this request was 1000ms ahead of the server's time."


def error_response(
    status: int, code: int, msg: str, headers: Mapping[str, str] | None = None
) -> Response:
    """Binance's error body ``{"code": <negative int>, "msg": …}``."""
    body = json.dumps({"code": code, "msg": msg})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def json_response(body: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A 200 JSON response."""
    return Response(json.dumps(body), media_type="application/json", headers=headers)


def binance_amount(amount: Decimal) -> str:
    """An amount as Binance writes it: fixed-point with 8 decimals when they suffice."""
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -8:
        amount = amount.quantize(_QUANTUM, context=_WIDE)
    return format(amount, "f")


def sign(payload: str, secret: str) -> str:
    """Hex HMAC-SHA256 of ``payload`` under ``secret`` (what the client must send)."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def split_signature(query: str, body: bytes = b"") -> tuple[str, list[str]]:
    """``(totalParams, signatures)``: the query string without its ``signature`` parameter(s),
    concatenated with the body, and the signature values found."""
    kept: list[str] = []
    signatures: list[str] = []
    for part in query.split("&") if query else []:
        name, _, value = part.partition("=")
        if name == "signature":
            signatures.append(value)
        else:
            kept.append(part)
    return "&".join(kept) + body.decode("latin-1"), signatures


def interval_label(window_ms: int) -> str:
    """Binance's ``(intervalNum)(intervalLetter)`` for a window: ``1M`` for 60000 ms."""
    for unit_ms, letter in ((86_400_000, "D"), (3_600_000, "H"), (60_000, "M"), (1000, "S")):
        if window_ms % unit_ms == 0:
            return f"{window_ms // unit_ms}{letter}"
    return f"{math.ceil(window_ms / 1000)}S"


def _interval_name(window_ms: int) -> tuple[str, int]:
    label = interval_label(window_ms)
    names = {"S": "SECOND", "M": "MINUTE", "H": "HOUR", "D": "DAY"}
    return names[label[-1]], int(label[:-1])


class BadParameter(Exception):
    """A request parameter Binance refuses with 400 and ``code``."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def query_params(query: str) -> dict[str, str]:
    """The query's parameters; a repeated one is Binance's -1101."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in params:
            raise BadParameter(-1101, f"Duplicate values for parameter '{name}'.")
        params[name] = value
    return params


def _mandatory(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value:
        raise BadParameter(
            -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
        )
    return value


def timestamp_ms(params: Mapping[str, str]) -> Decimal:
    """``timestamp`` in milliseconds (a 16-digit or longer value counts microseconds)."""
    text = _mandatory(params, "timestamp")
    if not _TIMESTAMP.fullmatch(text):
        raise BadParameter(
            -1100,
            "Illegal characters found in parameter 'timestamp'; legal range is '^[0-9]{1,20}$'.",
        )
    value = Decimal(text)
    return value / 1000 if len(text.lstrip("0")) >= 16 else value


def recv_window_ms(params: Mapping[str, str]) -> Decimal:
    """``recvWindow`` (default 5000), at most 60000 with up to three decimals."""
    text = params.get("recvWindow")
    if text is None:
        return DEFAULT_RECV_WINDOW_MS
    try:
        value = Decimal(text) if _RECV_WINDOW.fullmatch(text) else None
    except InvalidOperation:
        value = None
    if value is None or value > MAX_RECV_WINDOW_MS:
        raise BadParameter(-1131, "recvWindow must be less than 60000")
    return value


def timing_error(timestamp: Decimal, recv_window: Decimal, server_ms: Decimal) -> str | None:
    """The -1021 message when ``timestamp`` fails Binance's timing rule, else None."""
    if timestamp >= server_ms + 1000:
        return MSG_TIMESTAMP_AHEAD
    if server_ms - timestamp > recv_window:
        return MSG_TIMESTAMP_OLD
    return None


def omit_zero(params: Mapping[str, str]) -> bool:
    """``omitZeroBalances`` (BOOLEAN, default false)."""
    text = params.get("omitZeroBalances", "false").lower()
    if text not in ("true", "false"):
        raise BadParameter(-1130, "Data sent for parameter 'omitZeroBalances' is not valid.")
    return text == "true"


def _uid(account: BinanceAccount) -> int:
    if account.uid is not None:
        return account.uid
    return 100_000_000 + int(hashlib.sha256(account.id.encode()).hexdigest(), 16) % 900_000_000


def account_json(account: BinanceAccount, *, omit_zero_balances: bool) -> dict[str, Any]:
    """The ``GET /api/v3/account`` body of ``account``."""
    balances = [
        {"asset": e.asset, "free": binance_amount(e.free), "locked": binance_amount(e.locked)}
        for e in account.entries
        if not (omit_zero_balances and e.free == 0 and e.locked == 0)
    ]
    if not omit_zero_balances:
        present = {e.asset for e in account.entries}
        balances.extend(
            {"asset": asset, "free": "0.00000000", "locked": "0.00000000"}
            for asset in ZERO_PADDING
            if asset not in present
        )
    return {
        "makerCommission": 10,
        "takerCommission": 10,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {
            "maker": "0.00100000",
            "taker": "0.00100000",
            "buyer": "0.00000000",
            "seller": "0.00000000",
        },
        "canTrade": True,
        "canWithdraw": True,
        "canDeposit": True,
        "brokered": False,
        "requireSelfTradePrevention": False,
        "preventSor": False,
        "updateTime": _UPDATE_TIME,
        "accountType": "SPOT",
        "balances": balances,
        "permissions": ["SPOT"],
        "uid": _uid(account),
    }


def _malformed(body: dict[str, Any], variant: str) -> bytes:
    if variant == "html":
        return bytes(html_error(200, "OK").body)
    if variant in {"bad_amount", "negative"} and body["balances"]:
        first = body["balances"][0]
        first["free"] = "NaN" if variant == "bad_amount" else "-1.00000000"
    raw = json.dumps(body).encode()
    return truncate(raw) if variant == "truncated" else raw


class WeightBook:
    """Per client IP: the weight used and the refusals in the current window.

    The window (and its reset by :meth:`SandboxState.reset`) is the state's Binance limiter's:
    a verdict that is allowed with exactly one request counted opens a new window.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ips: dict[str, tuple[int, int]] = {}

    def charge(self, ip: str, verdict: RateVerdict, weight: int) -> tuple[int, int]:
        """Count a request of ``weight``; returns ``(used weight, refusals)`` in the window."""
        with self._lock:
            used, refusals = self._ips.get(ip, (0, 0))
            if verdict.allowed and verdict.limit - verdict.remaining == 1:
                used, refusals = 0, 0
            if verdict.allowed:
                used += weight
            else:
                refusals += 1
            self._ips[ip] = (used, refusals)
            return used, refusals


class _Binance:
    """The route handlers, over the shared sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.by_key = {
            a.api_key: a for a in state.scenario.accounts if isinstance(a, BinanceAccount)
        }
        limit = state.rate_limit(VENUE)
        self.window_ms = (limit or _HEADER_WINDOW).window_ms
        self.weight_header = f"X-MBX-USED-WEIGHT-{interval_label(self.window_ms)}"
        self._header_windows = WindowLimiter(_HEADER_WINDOW) if limit is None else None
        self.book = WeightBook()

    # -- limits --------------------------------------------------------------------------

    async def meter(self, request: Request, weight: int) -> tuple[dict[str, str], Response | None]:
        """Count the request against the IP's limit: its weight header, and the 429/418 due."""
        ip = request.client.host if request.client is not None else "unknown"
        verdict = self.state.rate_check(VENUE, ip)
        if verdict is None:
            assert self._header_windows is not None
            verdict = self._header_windows.hit(ip)
        used, refusals = self.book.charge(ip, verdict, weight)
        headers = {self.weight_header: str(used)}
        if verdict.allowed:
            return headers, None
        await self.state.pause(None)
        retry = {"Retry-After": str(verdict.retry_after_seconds), **headers}
        interval, number = _interval_name(self.window_ms)
        if refusals == 1:
            msg = (
                f"Too many requests; current limit of IP({ip}) is {verdict.limit} requests per "
                f"{number} {interval}. Please use WebSocket Streams for live updates to avoid "
                "polling the API."
            )
            return headers, error_response(429, -1003, msg, retry)
        banned_until = int(time.time() * 1000) + verdict.reset_in_ms
        msg = (
            f"Way too many requests; IP({ip}) banned until {banned_until}. Please use "
            "WebSocket Streams for live updates to avoid bans."
        )
        return headers, error_response(418, -1003, msg, retry)

    # -- the account route ---------------------------------------------------------------

    async def account(self, request: Request) -> Response:
        headers, refused = await self.meter(request, ACCOUNT_WEIGHT)
        if refused is not None:
            return refused
        api_key = request.headers.get("x-mbx-apikey", "")
        if not _API_KEY.fullmatch(api_key):
            await self.state.pause(None)
            return error_response(401, -2014, "API-key format invalid.", headers)
        account = self.by_key.get(api_key)
        if account is None:
            await self.state.pause(None)
            return error_response(
                401, -2015, "Invalid API-key, IP, or permissions for action.", headers
            )
        query = request.scope.get("query_string", b"").decode("latin-1")
        body = await request.body()
        try:
            params = query_params(query)
            total_params, signatures = split_signature(query, body)
            signature = _mandatory(params, "signature")
            timestamp = timestamp_ms(params)
            recv_window = recv_window_ms(params)
            omit = omit_zero(params)
        except BadParameter as exc:
            await self.state.pause(account)
            return error_response(400, exc.code, exc.msg, headers)
        expected = sign(total_params, account.api_secret)
        if len(signatures) != 1 or not hmac.compare_digest(
            expected.encode(), signature.lower().encode()
        ):
            await self.state.pause(account)
            return error_response(400, -1022, "Signature for this request is not valid.", headers)
        problem = timing_error(timestamp, recv_window, Decimal(int(time.time() * 1000)))
        if problem is not None:
            await self.state.pause(account)
            return error_response(400, -1021, problem, headers)
        fault = self.state.admit(account)
        await self.state.pause(account)
        if fault is not None:
            failure = await self._fault(fault, headers)
            if failure is not None:
                return failure
        document = account_json(account, omit_zero_balances=omit)
        if fault is not None and fault.kind is FaultKind.MALFORMED:
            media = "text/html" if fault.variant == "html" else "application/json"
            return Response(_malformed(document, fault.variant), media_type=media, headers=headers)
        return json_response(document, headers)

    async def _fault(self, fault: Fault, headers: dict[str, str]) -> Response | None:
        if fault.kind is FaultKind.STATUS_5XX:
            if fault.variant == "html":
                response = html_error(fault.status, reason_phrase(fault.status))
                response.headers.update(headers)
                return response
            msg = "Internal error; unable to process your request. Please try again."
            return error_response(fault.status, -1001, msg, headers)
        if fault.kind is FaultKind.RATE_LIMIT:
            retry = {"Retry-After": str(-(-fault.retry_after_ms // 1000)), **headers}
            if fault.variant == "html":
                response = html_error(429, "Too Many Requests")
                response.headers.update(retry)
                return response
            return error_response(429, -1003, "Too many requests.", retry)
        if fault.kind is FaultKind.AUTH:
            return error_response(
                401, -2015, "Invalid API-key, IP, or permissions for action.", headers
            )
        if fault.kind is FaultKind.RESET:
            return ResetConnection()
        if fault.kind is FaultKind.TIMEOUT:
            await self.state.hang(fault.seconds)
        return None

    # -- public routes -------------------------------------------------------------------

    def _markets(self) -> dict[str, tuple[str, str, Decimal]]:
        """Symbol → (base, quote, price) of every priced asset against each of :data:`QUOTES`."""
        return {
            f"{base}{quote}": (base, quote, price)
            for base, price in sorted(self.state.scenario.prices.items())
            for quote in QUOTES
            if base != quote
        }

    def _symbols(self, params: Mapping[str, str]) -> list[str]:
        """The ``symbol`` / ``symbols`` filter, else every symbol; unknown ones are -1121."""
        known = self._markets()
        if "symbol" in params and "symbols" in params:
            raise BadParameter(-1128, "Combination of optional parameters invalid.")
        if "symbol" in params:
            wanted = [params["symbol"]]
        elif "symbols" in params:
            try:
                parsed = json.loads(params["symbols"])
            except ValueError:
                parsed = None
            if not isinstance(parsed, list) or not all(isinstance(s, str) for s in parsed):
                raise BadParameter(-1100, "Illegal characters found in parameter 'symbols'.")
            wanted = parsed
        else:
            return list(known)
        for symbol in wanted:
            if not _SYMBOL.fullmatch(symbol) or symbol not in known:
                raise BadParameter(-1121, "Invalid symbol.")
        return wanted

    async def ticker_price(self, request: Request) -> Response:
        one = "symbol" in dict(parse_qsl(request.url.query, keep_blank_values=True))
        headers, refused = await self.meter(
            request, TICKER_WEIGHT_ONE if one else TICKER_WEIGHT_MANY
        )
        if refused is not None:
            return refused
        await self.state.pause(None)
        try:
            wanted = self._symbols(query_params(request.url.query))
        except BadParameter as exc:
            return error_response(400, exc.code, exc.msg, headers)
        markets = self._markets()
        rows = [{"symbol": s, "price": binance_amount(markets[s][2])} for s in wanted]
        return json_response(rows[0] if one else rows, headers)

    async def exchange_info(self, request: Request) -> Response:
        headers, refused = await self.meter(request, EXCHANGE_INFO_WEIGHT)
        if refused is not None:
            return refused
        await self.state.pause(None)
        try:
            wanted = self._symbols(query_params(request.url.query))
        except BadParameter as exc:
            return error_response(400, exc.code, exc.msg, headers)
        markets = self._markets()
        symbols = [_symbol_json(s, base=markets[s][0], quote=markets[s][1]) for s in wanted]
        return json_response(
            {
                "timezone": "UTC",
                "serverTime": int(time.time() * 1000),
                "rateLimits": self._rate_limits(),
                "exchangeFilters": [],
                "symbols": symbols,
            },
            headers,
        )

    def _rate_limits(self) -> list[dict[str, Any]]:
        limits: list[dict[str, Any]] = [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": NOMINAL_WEIGHT_LIMIT,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
        ]
        limit = self.state.rate_limit(VENUE)
        if limit is not None:
            interval, number = _interval_name(limit.window_ms)
            limits.append(
                {
                    "rateLimitType": "RAW_REQUESTS",
                    "interval": interval,
                    "intervalNum": number,
                    "limit": limit.requests,
                }
            )
        return limits

    async def server_time(self, request: Request) -> Response:
        headers, refused = await self.meter(request, TIME_WEIGHT)
        if refused is not None:
            return refused
        return json_response({"serverTime": int(time.time() * 1000)}, headers)

    async def ping(self, request: Request) -> Response:
        headers, refused = await self.meter(request, TIME_WEIGHT)
        if refused is not None:
            return refused
        return json_response({}, headers)


def _symbol_json(symbol: str, *, base: str, quote: str) -> dict[str, Any]:
    """One spot symbol of ``exchangeInfo`` with the fields clients (ccxt) read."""
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.01000000",
                "maxPrice": "1000000.00000000",
                "tickSize": "0.01000000",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "0.00001000",
                "maxQty": "9000.00000000",
                "stepSize": "0.00001000",
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def routes(state: SandboxState) -> Sequence[BaseRoute]:
    """The Binance routes over ``state``."""
    handlers = _Binance(state)
    return [
        Route(ACCOUNT_PATH, handlers.account, methods=["GET"]),
        Route(EXCHANGE_INFO_PATH, handlers.exchange_info, methods=["GET"]),
        Route(TICKER_PRICE_PATH, handlers.ticker_price, methods=["GET"]),
        Route(TIME_PATH, handlers.server_time, methods=["GET"]),
        Route(PING_PATH, handlers.ping, methods=["GET"]),
    ]


MODULE: Final = VenueModule(VENUE, routes)
