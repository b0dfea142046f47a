"""Binance Spot: one account's balances from ``GET /api/v3/account`` (DESIGN §3).

The request is ``omitZeroBalances=true&recvWindow=<ms>&timestamp=<ms>`` with ``signature`` (hex
HMAC-SHA256 of that exact query string under the API secret, see :func:`sign`) appended last,
and the API key in the ``X-MBX-APIKEY`` header. The total per asset is ``free + locked`` (both
unsigned decimal strings; exactly parsed JSON numbers are accepted too), summed over duplicate
entries. Assets whose total is zero are dropped, exactly what ``omitZeroBalances=true`` asks of
the venue, so the result is the same whether or not the venue honoured the flag (DESIGN §4
reads an absent asset as 0).

Errors (Binance sends ``{"code": <negative int>, "msg": ...}``; messages name the HTTP status
and the code, never ``msg``, which may echo request values)::

    429, or code -1003 TOO_MANY_REQUESTS        → VenueRateLimited (Retry-After in seconds)
    418 (IP banned for continuing after 429s)   → VenueRateLimited (Retry-After in seconds; a
                                                  ban of minutes exceeds the retry policy's
                                                  max wait, so the cycle gives up on it)
    code -1022 / -2014 / -2015 (any 4xx)        → VenueAuthError
    code -1021 (timestamp outside recvWindow)   → VenueUnavailable, transient: every attempt is
                                                  re-stamped, so a slow request passes on retry;
                                                  a skewed host clock fails every attempt, and
                                                  the message says to check the clock
    403 without one of those codes (WAF block)  → VenueAuthError (DESIGN §3: 403 is ``auth``)
    5xx                                         → VenueUnavailable
    anything else                               → as :func:`infra.venues.http.check_status`

Rate limits count request weight per client IP, so every account of one ``base_url`` shares a
budget: :class:`WeightGuard` (one per ``base_url`` in the process, see :func:`shared_weight_guard`)
reads ``X-MBX-USED-WEIGHT-1M`` from every response and, before each request, waits for the next
minute when the request's weight would take the minute past its limit: the client slows down
before the venue answers 429. After a 429/418 it refuses further requests to that ``base_url``
locally (VenueRateLimited with the remaining wait) until the venue's Retry-After has passed,
since continuing after a 429 is what earns an IP ban.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

import httpx

from domain.amounts import add
from infra.venues.errors import (
    VenueAuthError,
    VenueRateLimited,
    VenueUnavailable,
)
from infra.venues.http import (
    RetryAfterUnit,
    VenueResponse,
    check_status,
    decode_json,
    parse_retry_after,
    send,
)
from infra.venues.pacing import LimitModel, Pacer, RateLimit
from infra.venues.parsing import (
    require_amount,
    require_list,
    require_member,
    require_object,
    require_str,
)

VENUE: Final = "binance"
ACCOUNT_PATH: Final = "/api/v3/account"
#: The documented request weight of ``GET /api/v3/account``.
ACCOUNT_WEIGHT: Final = 20
#: The weight the IP has used in the current minute, on every response.
USED_WEIGHT_HEADER: Final = "X-MBX-USED-WEIGHT-1M"
#: Binance's published REQUEST_WEIGHT limit per IP: 6000 a minute (it has changed before: a
#: desk whose IP serves other clients too sets its share with the account's ``rate_limit``).
DEFAULT_WEIGHT_LIMIT: Final = 6000
WEIGHT_WINDOW_SECONDS: Final = 60.0
DEFAULT_RECV_WINDOW_MS: Final = 5000
#: "recvWindow … ≤ 60000" (Binance docs).
MAX_RECV_WINDOW_MS: Final = 60_000
#: HTTP statuses that are rate limiting on Binance: 429, and 418 for an IP auto-ban.
RATE_LIMIT_STATUSES: Final = (418, 429)

#: Binance error codes that mean the credentials were refused.
INVALID_SIGNATURE: Final = -1022
BAD_API_KEY_FMT: Final = -2014
REJECTED_MBX_KEY: Final = -2015
AUTH_CODES: Final = frozenset({INVALID_SIGNATURE, BAD_API_KEY_FMT, REJECTED_MBX_KEY})
INVALID_TIMESTAMP: Final = -1021
TOO_MANY_REQUESTS: Final = -1003

_USED_WEIGHT = re.compile(r"\d{1,9}")
#: API keys and secrets are printable ASCII without spaces (Binance's are 64 alphanumerics).
_CREDENTIAL = re.compile(r"[\x21-\x7e]{1,512}")


class BinanceKeyError(ValueError):
    """The configured API key or secret cannot sign requests (the message never shows them)."""


def sign(query: str, secret: str) -> str:
    """Binance's ``signature``: lower-case hex HMAC-SHA256 of ``query`` under ``secret``.

    ``query`` is the exact query string sent (``a=1&b=2``, without ``signature``), which for a
    GET is the whole of Binance's ``totalParams``.
    """
    return hmac.new(secret.encode("utf-8"), query.encode("utf-8"), hashlib.sha256).hexdigest()


#: The published limit as requests of the one call recon makes (weight 20): 300 a minute per
#: IP, shared by every account behind one ``base_url`` (and every worker: the Redis budget).
PUBLISHED_LIMIT: Final = RateLimit.in_requests(
    LimitModel.WINDOW,
    per_second=Decimal(DEFAULT_WEIGHT_LIMIT) / Decimal(60),
    burst=DEFAULT_WEIGHT_LIMIT,
    cost=ACCOUNT_WEIGHT,
)
LIMIT_SCOPE: Final = "ip"


class WeightGuard:
    """A per-minute request-weight budget shared by every client of one ``base_url``.

    In-process and thread-safe. Windows are wall-clock minutes (``floor(clock() / 60)``), as
    Binance's ``-1M`` counters are. The used weight of the current window is the larger of what
    this process reserved and what the venue last reported in ``X-MBX-USED-WEIGHT-1M`` (which
    includes every other process on the IP).
    """

    def __init__(
        self,
        limit: int = DEFAULT_WEIGHT_LIMIT,
        *,
        window_seconds: float = WEIGHT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if type(limit) is not int or limit < 1:
            raise ValueError("weight limit must be a positive integer")
        if not math.isfinite(window_seconds) or window_seconds <= 0:
            raise ValueError("window_seconds must be finite and positive")
        self.limit = limit
        self.window_seconds = window_seconds
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._window = -1
        self._used = 0
        self._blocked_until = 0.0

    def _roll(self, now: float) -> int:
        """The window of ``now``; a new window starts from zero used weight (lock held)."""
        window = math.floor(now / self.window_seconds)
        if window > self._window:
            self._window = window
            self._used = 0
        return window

    def acquire(self, weight: int) -> int:
        """Reserve ``weight`` in the current window, first sleeping into the next window if it
        would exceed the limit; returns the window the request is sent in.

        Raises VenueRateLimited (without sleeping) while the venue's Retry-After from an earlier
        429/418 has not passed.
        """
        if weight > self.limit:
            raise ValueError("a request's weight exceeds the whole weight limit")
        while True:
            with self._lock:
                now = self._clock()
                blocked_for = self._blocked_until - now
                if blocked_for > 0:
                    raise VenueRateLimited(
                        f"{VENUE}: rate limited (waiting out the venue's Retry-After "
                        "before any further request to this base_url)",
                        retry_after=blocked_for,
                    )
                window = self._roll(now)
                if self._used + weight <= self.limit:
                    self._used += weight
                    return window
                wait = (window + 1) * self.window_seconds - now
            self._sleep(wait)

    def record(self, used_weight: int, window: int) -> None:
        """The venue reported ``used_weight`` for a request sent in ``window``."""
        with self._lock:
            self._roll(self._clock())
            if window == self._window:
                self._used = max(self._used, used_weight)

    def back_off(self, seconds: float | None) -> None:
        """The venue answered 429/418: refuse requests for ``seconds`` (None: until the next
        window)."""
        with self._lock:
            now = self._clock()
            if seconds is None:
                until = (math.floor(now / self.window_seconds) + 1) * self.window_seconds
            else:
                until = now + seconds
            self._blocked_until = max(self._blocked_until, until)

    @property
    def used(self) -> int:
        """The weight counted in the current window."""
        with self._lock:
            self._roll(self._clock())
            return self._used


_GUARDS: dict[str, WeightGuard] = {}
_GUARDS_LOCK: Final = threading.Lock()


def shared_weight_guard(base_url: str, *, limit: int = DEFAULT_WEIGHT_LIMIT) -> WeightGuard:
    """The process-wide guard of ``base_url`` (created with ``limit`` on first use).

    Binance counts weight per client IP, so every account of one ``base_url`` must share it.
    """
    key = base_url.strip().rstrip("/").lower()
    with _GUARDS_LOCK:
        guard = _GUARDS.get(key)
        if guard is None:
            guard = _GUARDS[key] = WeightGuard(limit)
        return guard


class BinanceClient:
    """Reads one Binance Spot account's total (free + locked) balance per asset."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        base_url: str = "https://api.binance.com",
        api_key: str,
        api_secret: str,
        timeout: float,
        recv_window_ms: int = DEFAULT_RECV_WINDOW_MS,
        clock: Callable[[], float] = time.time,
        weight_guard: WeightGuard | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        if not _CREDENTIAL.fullmatch(api_key):
            raise BinanceKeyError("Binance API key must be printable ASCII without spaces")
        if not _CREDENTIAL.fullmatch(api_secret):
            raise BinanceKeyError("Binance API secret must be printable ASCII without spaces")
        if type(recv_window_ms) is not int or not 1 <= recv_window_ms <= MAX_RECV_WINDOW_MS:
            raise ValueError(f"recv_window_ms must be an integer from 1 to {MAX_RECV_WINDOW_MS}")
        self._http = http
        self._url = base_url.rstrip("/") + ACCOUNT_PATH
        self._api_key = api_key
        self._api_secret = api_secret
        self._timeout = timeout
        self._recv_window_ms = recv_window_ms
        self._clock = clock
        self._guard = weight_guard if weight_guard is not None else shared_weight_guard(base_url)
        self._pacer = pacer
        if self._guard.limit < ACCOUNT_WEIGHT:
            raise ValueError(
                f"the weight limit must be at least {ACCOUNT_WEIGHT} (one account call)"
            )

    def fetch_balances(self) -> dict[str, Decimal]:
        """Total per asset (``free + locked``, duplicates summed, zero totals dropped)."""
        if self._pacer is not None:
            self._pacer.wait()  # the budget shared by every process (the guard: this one's)
        window = self._guard.acquire(ACCOUNT_WEIGHT)
        # Stamped after any wait of the guard, so the timestamp is fresh when it is sent.
        query = (
            f"omitZeroBalances=true&recvWindow={self._recv_window_ms}"
            f"&timestamp={int(self._clock() * 1000)}"
        )
        url = f"{self._url}?{query}&signature={sign(query, self._api_secret)}"
        response = send(
            self._http,
            "GET",
            url,
            venue=VENUE,
            timeout=self._timeout,
            headers={"X-MBX-APIKEY": self._api_key, "Accept": "application/json"},
        )
        used = used_weight(response.headers)
        if used is not None:
            self._guard.record(used, window)
        self._raise_for_error(response)
        return account_totals(decode_json(response, venue=VENUE))

    def _raise_for_error(self, response: VenueResponse) -> None:
        """Raise the venue error of a non-2xx response (see the module docstring)."""
        status = response.status_code
        if 200 <= status < 300:
            return
        code = error_code(response.body)
        described = f"HTTP {status}" + (f", code {code}" if code is not None else "")
        if status in RATE_LIMIT_STATUSES or code == TOO_MANY_REQUESTS:
            retry_after = parse_retry_after(
                response.headers.get("Retry-After"), RetryAfterUnit.SECONDS
            )
            self._guard.back_off(retry_after)
            what = "IP banned for continuing after rate limits" if status == 418 else "rate limited"
            raise VenueRateLimited(f"{VENUE}: {what} ({described})", retry_after=retry_after)
        if status >= 500:
            raise VenueUnavailable(f"{VENUE}: venue unavailable ({described})")
        if code == INVALID_TIMESTAMP:
            raise VenueUnavailable(
                f"{VENUE}: request timestamp outside recvWindow ({described}); "
                "check the host clock (NTP) if this persists"
            )
        if code in AUTH_CODES:
            raise VenueAuthError(f"{VENUE}: credentials refused ({described})")
        if status == 403:
            raise VenueAuthError(f"{VENUE}: request blocked by the venue's firewall ({described})")
        check_status(response, venue=VENUE, rate_limit_statuses=RATE_LIMIT_STATUSES)


def error_code(body: bytes) -> int | None:
    """The integer ``code`` of a Binance error body ``{"code": -2015, "msg": …}``, else None."""
    try:
        payload = json.loads(body, parse_float=Decimal, parse_int=Decimal)
    except (ValueError, RecursionError):
        return None
    if not isinstance(payload, dict):
        return None
    code = payload.get("code")
    if (
        isinstance(code, Decimal)
        and code.is_finite()
        and code == code.to_integral_value()
        and code.copy_abs() < 100_000  # abs() would overflow on 1e999999999
    ):
        return int(code)
    return None


def used_weight(headers: httpx.Headers) -> int | None:
    """``X-MBX-USED-WEIGHT-1M`` as an integer; None when absent or not a plain integer."""
    value = headers.get(USED_WEIGHT_HEADER)
    if value is None or not _USED_WEIGHT.fullmatch(value.strip()):
        return None
    return int(value.strip())


def account_totals(body: Any) -> dict[str, Decimal]:
    """``free + locked`` per asset of an account body, duplicates summed, zero totals dropped."""
    payload = require_object(body, venue=VENUE, field="body")
    balances = require_list(
        require_member(payload, "balances", venue=VENUE), venue=VENUE, field="balances"
    )
    totals: dict[str, Decimal] = {}
    for index, entry in enumerate(balances):
        field = f"balances[{index}]"
        obj = require_object(entry, venue=VENUE, field=field)
        asset = require_str(
            require_member(obj, "asset", venue=VENUE, field=f"{field}.asset"),
            venue=VENUE,
            field=f"{field}.asset",
        )
        free, locked = (
            require_amount(
                require_member(obj, key, venue=VENUE, field=f"{field}.{key}"),
                venue=VENUE,
                field=f"{field}.{key}",
                unsigned=True,
            )
            for key in ("free", "locked")
        )
        totals[asset] = add(totals.get(asset, Decimal(0)), add(free, locked))
    return {asset: total for asset, total in totals.items() if total != 0}
