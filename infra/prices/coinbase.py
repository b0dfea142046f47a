"""Live USD marks from Coinbase's public product endpoint (``[prices] source = "coinbase"``).

``GET {base_url}/api/v3/brokerage/market/products/{BASE}-USD`` (no auth; reference §1.5)
returns a Product whose ``price`` is a decimal string. :meth:`CoinbasePrices.prices_for`
turns the assets in play into base assets (a perp ``ETH/USD:USDC`` is valued at ``ETH``,
DESIGN §4), fetches each base's mark at most once per TTL, and returns a
:class:`~domain.policy.PriceTable`. Decisions:

- **Static marks win.** A mark in the accounts file's ``[prices]`` is the operator's explicit
  choice (an asset Coinbase does not list, a pegged token, a frozen test price): it is served as
  is and never fetched. USD, USDC and USDT are 1 unless the static table sets them, and are
  never fetched either.
- **No mark is unpriced, never 0** (DESIGN §4). An unknown product (404), a failed fetch
  (timeout, connection error, 5xx, 429, 401/403), a body that is not the documented JSON, or a
  price that is missing, zero, negative or not a finite decimal leaves the asset out of the
  table. So does an asset code that cannot name a Coinbase product (anything but ``A-Z0-9``).
- **Cache.** Each base's outcome, a mark or a failure, is kept for ``ttl_seconds`` (default
  30 s) from when its fetch completed. A failure is cached too, so an unknown product or a
  rate-limited endpoint is asked once per TTL, not once per cycle or confirmation re-fetch;
  its WARNING is therefore logged once per asset per TTL. Log lines name the asset, the product
  and why (HTTP status, Coinbase's error code): never a response body, and never a price.
- **Concurrent, paced.** The bases still to fetch are fetched on a small thread pool
  (``max_concurrency``, default 4) over the shared ``httpx.Client``, so one slow product does
  not hold up the rest (``timeout`` bounds each request). Request starts are spaced to at most
  ``requests_per_second`` (default 10: Coinbase's published limit for public endpoints, per IP),
  so a cold cache over many assets does not trip a 429 that would leave them all unpriced.
  A cycle over N new bases takes about N / 10 s plus one request's latency.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import httpx

from domain.amounts import InvalidAmount, parse_amount
from domain.policy import USD_PEGGED, PriceTable, base_asset
from infra.venues.errors import MalformedVenueResponse, VenueError
from infra.venues.http import check_status, decode_json, send

log = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://api.coinbase.com"
PRODUCT_PATH: Final = "/api/v3/brokerage/market/products/{product_id}"
DEFAULT_TTL_SECONDS: Final = 30.0
DEFAULT_MAX_CONCURRENCY: Final = 4
#: Coinbase's published limit for public endpoints (about 10 requests a second per IP).
DEFAULT_REQUESTS_PER_SECOND: Final = 10.0
QUOTE: Final = "USD"
_VENUE: Final = "coinbase prices"
_PRODUCT_BASE: Final = re.compile(r"[A-Z0-9]{1,20}")
_HEADERS: Final = {"Accept": "application/json"}


@dataclass(frozen=True, slots=True)
class _Entry:
    """One base's cached outcome: its mark, or None (unpriced), until ``expires_at``."""

    mark: Decimal | None
    expires_at: float


class _Pacer:
    """Spaces request starts at least ``1 / per_second`` apart (thread-safe)."""

    def __init__(
        self, per_second: float, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self._interval = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_start = float("-inf")

    def wait_turn(self) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start)
            self._next_start = start + self._interval
        if start > now:
            self._sleep(start - now)


def product_id(base: str) -> str | None:
    """The Coinbase product pricing ``base`` in USD (``BTC`` → ``BTC-USD``), or None."""
    return f"{base}-{QUOTE}" if _PRODUCT_BASE.fullmatch(base) else None


class CoinbasePrices:
    """USD marks from Coinbase, cached per base for a TTL; satisfies the ``PriceSource`` port.

    ``clock`` (monotonic seconds) drives the cache and the pacing, ``sleep`` the pacing's waits;
    both are injectable for tests.
    """

    def __init__(
        self,
        http: httpx.Client,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        static: PriceTable | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND,
    ) -> None:
        if timeout <= 0 or ttl_seconds < 0:
            raise ValueError("timeout must be positive and ttl_seconds not negative")
        if max_concurrency < 1 or requests_per_second <= 0:
            raise ValueError("max_concurrency and requests_per_second must be positive")
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._ttl = ttl_seconds
        self._static = static if static is not None else PriceTable()
        self._clock = clock
        self._max_concurrency = max_concurrency
        self._pacer = _Pacer(requests_per_second, clock, sleep)
        self._lock = threading.Lock()
        self._cache: dict[str, _Entry] = {}

    def prices_for(self, assets: Iterable[str]) -> PriceTable:
        """Marks for ``assets`` (perps at their base): static ones, then live ones.

        Never raises for a price that cannot be had: that asset is simply absent (unpriced).
        """
        static = self._static.marks
        bases = sorted(
            {base_asset(asset) for asset in assets} - set(static) - USD_PEGGED,
        )
        marks: dict[str, Decimal] = dict(static)
        now = self._clock()
        missing: list[str] = []
        with self._lock:
            for base in bases:
                entry = self._cache.get(base)
                if entry is None or entry.expires_at <= now:
                    missing.append(base)
                elif entry.mark is not None:
                    marks[base] = entry.mark
        for base, mark in self._fetch_all(missing).items():
            if mark is not None:
                marks[base] = mark
        return PriceTable(marks)

    def _fetch_all(self, bases: list[str]) -> dict[str, Decimal | None]:
        if not bases:
            return {}
        if len(bases) == 1:
            return {bases[0]: self._fetch_and_cache(bases[0])}
        workers = min(self._max_concurrency, len(bases))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="coinbase-prices") as pool:
            return dict(zip(bases, pool.map(self._fetch_and_cache, bases), strict=True))

    def _fetch_and_cache(self, base: str) -> Decimal | None:
        product = product_id(base)
        mark: Decimal | None = None
        if product is None:
            reason = "the asset code cannot name a Coinbase product"
        else:
            try:
                mark = self._fetch(product)
            except VenueError as error:
                reason = f"{error.kind}: {error.message}"
        with self._lock:
            self._cache[base] = _Entry(mark, self._clock() + self._ttl)
        if mark is None:
            log.warning(
                "no USD mark for %s from Coinbase (%s); unpriced for %g s",
                base,
                reason,
                self._ttl,
            )
        return mark

    def _fetch(self, product: str) -> Decimal:
        self._pacer.wait_turn()
        url = self._base_url + PRODUCT_PATH.format(product_id=product)
        venue = f"{_VENUE} {product}"
        response = send(
            self._http, "GET", url, venue=venue, timeout=self._timeout, headers=_HEADERS
        )
        check_status(response, venue=venue)
        return _mark(decode_json(response, venue=venue), product, venue)


def _mark(body: Any, product: str, venue: str) -> Decimal:
    """The positive ``price`` of the Product ``body`` for ``product``."""
    if not isinstance(body, dict):
        raise MalformedVenueResponse(f"{venue}: malformed response: not a Product object")
    if body.get("product_id", product) != product:
        raise MalformedVenueResponse(f"{venue}: malformed response: another product_id")
    if body.get("quote_currency_id", QUOTE) != QUOTE:
        raise MalformedVenueResponse(f"{venue}: malformed response: not quoted in {QUOTE}")
    if "price" not in body:
        raise MalformedVenueResponse(f"{venue}: malformed response: no 'price'")
    try:
        price = parse_amount(body["price"], allow_negative=False)
    except InvalidAmount as error:
        raise MalformedVenueResponse(f"{venue}: malformed response: 'price': {error}") from None
    if price == 0:
        raise MalformedVenueResponse(f"{venue}: malformed response: 'price' is zero")
    return price
