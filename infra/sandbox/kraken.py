"""Kraken Spot on the sandbox: ``POST /0/private/Balance`` and ``/0/private/BalanceEx`` with
Kraken's auth, nonce rule, error style and call counter, plus the public ``Assets``,
``AssetPairs`` and ``Ticker`` routes that ccxt's ``load_markets`` reads.

Auth, as the real API checks it: ``API-Key`` must name a scenario account (else
``EAPI:Invalid key``); the body must carry a ``nonce`` (form-encoded, or JSON when the
``Content-Type`` says so); ``API-Sign`` must equal
``base64(HMAC-SHA512(base64decode(secret), path + SHA256(nonce + body)))`` computed over the
exact body bytes received (else ``EAPI:Invalid signature``); and the nonce must be greater than
the last one accepted for that key (else ``EAPI:Invalid nonce``). Errors are HTTP 200 with
``{"error": [...]}``, as Kraken sends them.

Rate limits, per API key: the account's ``rate_limit`` is Kraken's decaying call counter (each
Balance call adds 1, the counter falls by ``decay_per_second``; a call that would take it past
``max_counter`` is refused with ``EAPI:Rate limit exceeded`` and adds nothing). A
``[rate_limits.kraken]`` fixed window, if the scenario sets one, applies per key as well.

Faults: ``status_5xx`` is that status with ``{"error":["EService:Unavailable"]}`` (500:
``EGeneral:Internal error``) or a CDN's HTML page; ``rate_limit`` is HTTP 200 with
``EAPI:Rate limit exceeded`` (variant ``json``; Kraken sends no wait) or a CDN's 429 HTML page
with ``Retry-After`` in seconds (variant ``html``); ``auth`` is ``EAPI:Invalid key``;
``malformed``, ``timeout`` and ``reset`` behave as on the other venues.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from decimal import Context, Decimal
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from infra.sandbox.scenario import Fault, FaultKind, KrakenAccount, KrakenRateLimit
from infra.sandbox.state import (
    ResetConnection,
    SandboxState,
    VenueModule,
    html_error,
    reason_phrase,
    truncate,
)
from infra.venues.kraken_assets import KRAKEN_IDS, LEGACY_ASSETS, altname, canonical_asset

BALANCE_PATH: Final = "/0/private/Balance"
BALANCE_EX_PATH: Final = "/0/private/BalanceEx"
ASSETS_PATH: Final = "/0/public/Assets"
ASSET_PAIRS_PATH: Final = "/0/public/AssetPairs"
TICKER_PATH: Final = "/0/public/Ticker"
#: What a Balance (or BalanceEx) call adds to the key's call counter.
BALANCE_COST: Final = 1
MAX_NONCE: Final = 2**64 - 1

INVALID_KEY: Final = "EAPI:Invalid key"
INVALID_SIGNATURE: Final = "EAPI:Invalid signature"
INVALID_NONCE: Final = "EAPI:Invalid nonce"
RATE_LIMIT_EXCEEDED: Final = "EAPI:Rate limit exceeded"

#: Fiat balances are written with 4 decimals, everything else with 10 (as Kraken does).
_FIAT: Final = frozenset({"USD", "EUR", "GBP", "CAD", "JPY", "AUD", "CHF"})
_WIDE: Final = Context(prec=80)
_NONCE = re.compile(r"[0-9]{1,20}")


def kraken_error(*codes: str, status: int = 200) -> Response:
    """Kraken's error body ``{"error": [codes…]}``, HTTP 200 unless told otherwise."""
    return Response(
        json.dumps({"error": list(codes)}), status_code=status, media_type="application/json"
    )


def kraken_result(result: Any) -> Response:
    """Kraken's success body ``{"error": [], "result": …}``."""
    return Response(json.dumps({"error": [], "result": result}), media_type="application/json")


def kraken_amount(asset: str, amount: Decimal) -> str:
    """A balance as Kraken writes it: 4 decimals for fiat, 10 otherwise (more if needed)."""
    places = 4 if canonical_asset(asset.partition(".")[0]) in _FIAT else 10
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -places:
        amount = amount.quantize(Decimal(1).scaleb(-places), context=_WIDE)
    return format(amount, "f")


def balance_result(account: KrakenAccount) -> dict[str, str]:
    """The ``result`` of ``Balance``: asset id → total."""
    return {e.asset: kraken_amount(e.asset, e.balance) for e in account.entries}


def balance_ex_result(account: KrakenAccount) -> dict[str, dict[str, str]]:
    """The ``result`` of ``BalanceEx``: asset id → ``{balance, hold_trade}`` (strings)."""
    return {
        e.asset: {
            "balance": kraken_amount(e.asset, e.balance),
            "hold_trade": kraken_amount(e.asset, e.hold_trade),
        }
        for e in account.entries
    }


def signature_valid(
    secret_b64: str, path: str, nonce_text: str, body: bytes, api_sign: str | None
) -> bool:
    """Whether ``api_sign`` is Kraken's signature of ``body`` (exact bytes) for ``path``."""
    if not api_sign:
        return False
    try:
        provided = base64.b64decode(api_sign.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    digest = hashlib.sha256(nonce_text.encode("ascii") + body).digest()
    secret = base64.b64decode(secret_b64)
    expected = hmac.new(secret, path.encode("utf-8") + digest, hashlib.sha512).digest()
    return hmac.compare_digest(provided, expected)


def nonce_of(body: bytes, content_type: str) -> str | None:
    """The body's ``nonce`` as sent (form-encoded, or JSON), if it is a 64-bit unsigned int."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    value: object
    if content_type.split(";", 1)[0].strip().lower() == "application/json":
        try:
            data = json.loads(text)
        except ValueError:
            return None
        value = data.get("nonce") if isinstance(data, dict) else None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
    else:
        values = urllib.parse.parse_qs(text, keep_blank_values=True).get("nonce", [])
        value = values[0] if len(values) == 1 else None
    if not isinstance(value, str) or not _NONCE.fullmatch(value) or int(value) > MAX_NONCE:
        return None
    return value


class NonceLedger:
    """The last nonce accepted per API key (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}

    def advance(self, api_key: str, nonce: int) -> bool:
        """Accept ``nonce`` if it exceeds the key's last one (and remember it)."""
        with self._lock:
            if nonce <= self._last.get(api_key, 0):
                return False
            self._last[api_key] = nonce
            return True


class CallCounter:
    """Kraken's per-key call counters: +cost per accepted call, decaying linearly with time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._counters: dict[str, tuple[float, float]] = {}

    def hit(self, api_key: str, limit: KrakenRateLimit, cost: int = BALANCE_COST) -> bool:
        """Count a call of ``cost`` if it keeps the counter within ``limit``; False: refused."""
        with self._lock:
            now = self._clock()
            counter, at = self._counters.get(api_key, (0.0, now))
            counter = max(0.0, counter - limit.decay_per_second * (now - at))
            allowed = counter + cost <= limit.max_counter
            if allowed:
                counter += cost
            self._counters[api_key] = (counter, now)
            return allowed

    def level(self, api_key: str, limit: KrakenRateLimit) -> float:
        """The key's counter now (after decay)."""
        with self._lock:
            now = self._clock()
            counter, at = self._counters.get(api_key, (0.0, now))
            return max(0.0, counter - limit.decay_per_second * (now - at))

    def reset(self) -> None:
        """Every counter back to zero."""
        with self._lock:
            self._counters.clear()


def _malformed(result: dict[str, Any], variant: str) -> Response:
    if variant == "html":
        return html_error(200, "OK")
    if variant in {"bad_amount", "negative"} and result:
        asset = next(iter(result))
        bad = "NaN" if variant == "bad_amount" else "-1.0000000000"
        if isinstance(result[asset], dict):
            result[asset]["balance"] = bad
        else:
            result[asset] = bad
    body = json.dumps({"error": [], "result": result}).encode()
    if variant == "truncated":
        body = truncate(body)
    return Response(body, media_type="application/json")


def _pair_id(base_id: str) -> str:
    """Kraken's pair id against USD: legacy ids pair with ``ZUSD`` (``XXBTZUSD``)."""
    return f"{base_id}ZUSD" if base_id in LEGACY_ASSETS else f"{base_id}USD"


def _requested(query: str | None) -> list[str] | None:
    if query is None or not query.strip():
        return None
    return [item.strip() for item in query.split(",") if item.strip()]


def _select(
    available: dict[str, dict[str, Any]],
    wanted: Iterable[str] | None,
    names: Callable[[str], set[str]],
) -> dict[str, dict[str, Any]] | None:
    """The entries of ``available`` named by ``wanted`` (id or altname); None if one is unknown."""
    if wanted is None:
        return available
    chosen: dict[str, dict[str, Any]] = {}
    for name in wanted:
        match = next((key for key in available if name.upper() in names(key)), None)
        if match is None:
            return None
        chosen[match] = available[match]
    return chosen


class _Kraken:
    """The route handlers, over the shared sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.accounts = [a for a in state.scenario.accounts if isinstance(a, KrakenAccount)]
        self.by_key = {a.api_key: a for a in self.accounts}
        self.nonces = NonceLedger()
        self.counters = CallCounter()

    # -- private ----------------------------------------------------------------------------

    async def balance(self, request: Request) -> Response:
        return await self._private(request, extended=False)

    async def balance_ex(self, request: Request) -> Response:
        return await self._private(request, extended=True)

    async def _private(self, request: Request, *, extended: bool) -> Response:
        body = await request.body()
        account = self.by_key.get(request.headers.get("api-key", "").strip())
        if account is None:
            return kraken_error(INVALID_KEY)
        nonce = nonce_of(body, request.headers.get("content-type", ""))
        if nonce is None:
            return kraken_error(INVALID_NONCE)
        path = request.url.path
        if not signature_valid(
            account.api_secret, path, nonce, body, request.headers.get("api-sign")
        ):
            return kraken_error(INVALID_SIGNATURE)
        if not self.nonces.advance(account.api_key, int(nonce)):
            return kraken_error(INVALID_NONCE)
        if not self._within_rate_limit(account):
            await self.state.pause(account)
            return kraken_error(RATE_LIMIT_EXCEEDED)
        fault = self.state.admit(account)
        await self.state.pause(account)
        if fault is not None and fault.kind is not FaultKind.MALFORMED:
            failure = await self._fault(fault)
            if failure is not None:
                return failure
        result: dict[str, Any] = (
            dict(balance_ex_result(account)) if extended else dict(balance_result(account))
        )
        if fault is not None and fault.kind is FaultKind.MALFORMED:
            return _malformed(result, fault.variant)
        return kraken_result(result)

    def _within_rate_limit(self, account: KrakenAccount) -> bool:
        verdict = self.state.rate_check("kraken", account.api_key)
        if verdict is not None and not verdict.allowed:
            return False
        limit = account.rate_limit
        return limit is None or self.counters.hit(account.api_key, limit, BALANCE_COST)

    async def _fault(self, fault: Fault) -> Response | None:
        if fault.kind is FaultKind.STATUS_5XX:
            if fault.variant == "html":
                return html_error(fault.status, reason_phrase(fault.status))
            code = "EGeneral:Internal error" if fault.status == 500 else "EService:Unavailable"
            return kraken_error(code, status=fault.status)
        if fault.kind is FaultKind.RATE_LIMIT:
            if fault.variant == "html":
                response = html_error(429, "Too Many Requests")
                response.headers["Retry-After"] = str(math.ceil(fault.retry_after_ms / 1000))
                return response
            return kraken_error(RATE_LIMIT_EXCEEDED)
        if fault.kind is FaultKind.AUTH:
            return kraken_error(INVALID_KEY)
        if fault.kind is FaultKind.RESET:
            return ResetConnection()
        if fault.kind is FaultKind.TIMEOUT:
            await self.state.hang(fault.seconds)
        return None

    # -- public -----------------------------------------------------------------------------

    def _asset_ids(self) -> list[str]:
        ids = {"ZUSD"}
        ids.update(e.asset for a in self.accounts for e in a.entries)
        ids.update(KRAKEN_IDS.get(code, code) for code in self.state.scenario.prices)
        return sorted(ids)

    def _assets(self) -> dict[str, dict[str, Any]]:
        assets: dict[str, dict[str, Any]] = {}
        for venue_id in self._asset_ids():
            base, dot, suffix = venue_id.partition(".")
            fiat = canonical_asset(base) in _FIAT
            assets[venue_id] = {
                "aclass": "currency",
                "altname": f"{altname(base)}{dot}{suffix}",
                "decimals": 4 if fiat else 10,
                "display_decimals": 2 if fiat else 5,
                "status": "enabled",
            }
        return assets

    def _pairs(self) -> dict[str, dict[str, Any]]:
        pairs: dict[str, dict[str, Any]] = {}
        for code in sorted(self.state.scenario.prices):
            base_id = KRAKEN_IDS.get(code, code)
            if base_id == "ZUSD":
                continue
            alt = altname(base_id)
            pairs[_pair_id(base_id)] = {
                "altname": f"{alt}USD",
                "wsname": f"{alt}/USD",
                "aclass_base": "currency",
                "base": base_id,
                "aclass_quote": "currency",
                "quote": "ZUSD",
                "lot": "unit",
                "cost_decimals": 5,
                "pair_decimals": 2,
                "lot_decimals": 8,
                "lot_multiplier": 1,
                "leverage_buy": [],
                "leverage_sell": [],
                "fees": [[0, 0.4], [10000, 0.35], [50000, 0.24]],
                "fees_maker": [[0, 0.25], [10000, 0.2], [50000, 0.14]],
                "fee_volume_currency": "ZUSD",
                "margin_call": 80,
                "margin_stop": 40,
                "ordermin": "0.0001",
                "costmin": "0.5",
                "tick_size": "0.01",
                "status": "online",
            }
        return pairs

    async def assets(self, request: Request) -> Response:
        await self.state.pause(None)
        assets = self._assets()
        chosen = _select(
            assets,
            _requested(request.query_params.get("asset")),
            lambda key: {key, assets[key]["altname"]},
        )
        return kraken_error("EQuery:Unknown asset") if chosen is None else kraken_result(chosen)

    async def asset_pairs(self, request: Request) -> Response:
        await self.state.pause(None)
        pairs = self._pairs()
        chosen = _select(
            pairs,
            _requested(request.query_params.get("pair")),
            lambda key: {key, pairs[key]["altname"], pairs[key]["wsname"].replace("/", "")},
        )
        if chosen is None:
            return kraken_error("EQuery:Unknown asset pair")
        return kraken_result(chosen)

    async def ticker(self, request: Request) -> Response:
        await self.state.pause(None)
        pairs = self._pairs()
        chosen = _select(
            pairs,
            _requested(request.query_params.get("pair")),
            lambda key: {key, pairs[key]["altname"]},
        )
        if chosen is None:
            return kraken_error("EQuery:Unknown asset pair")
        prices = {
            _pair_id(KRAKEN_IDS.get(code, code)): price
            for code, price in self.state.scenario.prices.items()
        }
        result: dict[str, Any] = {}
        for pair_id in chosen:
            price = format(prices[pair_id], "f")
            result[pair_id] = {
                "a": [price, "1", "1.000"],
                "b": [price, "1", "1.000"],
                "c": [price, "0.00100000"],
                "v": ["0.00000000", "0.00000000"],
                "p": [price, price],
                "t": [0, 0],
                "l": [price, price],
                "h": [price, price],
                "o": price,
            }
        return kraken_result(result)


def routes(state: SandboxState) -> Sequence[BaseRoute]:
    """The Kraken routes over ``state``."""
    handlers = _Kraken(state)
    return [
        Route(BALANCE_PATH, handlers.balance, methods=["POST"]),
        Route(BALANCE_EX_PATH, handlers.balance_ex, methods=["POST"]),
        Route(ASSETS_PATH, handlers.assets, methods=["GET"]),
        Route(ASSET_PAIRS_PATH, handlers.asset_pairs, methods=["GET"]),
        Route(TICKER_PATH, handlers.ticker, methods=["GET"]),
    ]


MODULE: Final = VenueModule("kraken", routes)
