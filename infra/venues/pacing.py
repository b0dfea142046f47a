"""Rate budgets: pace venue requests so that no limit scope is ever exceeded (DESIGN §3).

A venue's limit counts per *scope*: Coinbase and Kraken per API key, Binance and the dYdX
indexer per client IP, i.e. every account behind one ``base_url``. Each scope has one budget,
shared by every thread, worker process and machine when it lives in Redis
(:class:`RedisRateBudget`: one Lua script per reservation, Redis's own clock), or by the
threads of one process (:class:`LocalRateBudget`: the embedded default and the CLI).

A request first *reserves* its slot: the budget answers how long to wait before sending, and
counts the request at that moment. Reservations of one scope are served in order, so a
request never overtakes an earlier one, and a scope's wait never touches another scope: one
busy Coinbase key slows no other key. Two limit models cover the venues:

* ``WINDOW`` — at most ``capacity`` requests in any span of ``capacity / per_second``
  seconds. Safe against a venue's fixed windows wherever they start (Coinbase 30 per second,
  dYdX 100 per 10 s, Binance 6,000 weight per minute): any fixed window is such a span. A
  small ``margin`` lengthens the span, for the time between sending and the venue counting.
* ``BUCKET`` — Kraken's call counter: each call adds one (a Balance call's cost), the counter
  decays by ``per_second`` a second, and a call that would take it above ``capacity`` is
  refused. A reservation waits until the counter has room.

Limits are kept in requests: a venue that counts weight (Binance: 6,000 a minute, 20 per
account call) is expressed as requests of the one call recon makes (:meth:`RateLimit.in_requests`).

The budget stores only scheduled times, never an amount or a key: scopes name a key by a
digest (:func:`key_scope`).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Protocol

import redis

log = logging.getLogger(__name__)

#: Redis keys of the budgets: ``recon:rate:<scope>``.
KEY_PREFIX: Final = "recon:rate:"
#: A window's span is lengthened by this fraction (at most MAX_MARGIN_S) for the time a
#: request spends between the reservation and the venue's counter.
MARGIN_FRACTION: Final = 0.05
MAX_MARGIN_S: Final = 0.25


class LimitModel(enum.Enum):
    WINDOW = "window"
    BUCKET = "bucket"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One scope's limit: ``capacity`` requests, replenished at ``per_second``."""

    model: LimitModel
    capacity: int
    per_second: float

    def __post_init__(self) -> None:
        if self.capacity < 1 or not self.per_second > 0:
            raise ValueError("a rate limit needs a capacity of at least 1 and a positive rate")

    @property
    def span(self) -> float:
        """WINDOW: the span (seconds) over which ``capacity`` units may be spent."""
        return self.capacity / self.per_second

    @property
    def margin(self) -> float:
        """Seconds added to every wait the limit imposes (never to a request sent at once)."""
        return min(MAX_MARGIN_S, MARGIN_FRACTION * self.span)

    @classmethod
    def in_requests(
        cls, model: LimitModel, per_second: Decimal | float, burst: int, cost: int = 1
    ) -> RateLimit:
        """A limit published (or configured: roster ``rate_limit``) in the venue's unit, for
        requests that each cost ``cost`` of it."""
        if cost < 1 or burst < cost:
            raise ValueError("a rate limit's burst must allow at least one request")
        return cls(model, burst // cost, float(per_second) / cost)


class RateBudget(Protocol):
    """Where the budgets of the scopes live."""

    def reserve(self, scope: str, limit: RateLimit) -> float:
        """Count one request in ``scope``; the seconds to wait before sending it."""
        ...


# --- in one process ----------------------------------------------------------------------------


class LocalRateBudget:
    """The budgets of one process's threads (the embedded default, the CLI)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, deque[float]] = {}
        self._buckets: dict[str, float] = {}  # scope → when the counter would be back at 0

    def reserve(self, scope: str, limit: RateLimit) -> float:
        with self._lock:
            now = self._clock()
            if limit.model is LimitModel.WINDOW:
                times = self._windows.get(scope)
                if times is None or times.maxlen != limit.capacity:
                    times = self._windows[scope] = deque(times or (), maxlen=limit.capacity)
                at = _window_slot(times, now, limit)
                times.append(at)
            else:
                empty_at = self._buckets.get(scope, now)
                at, self._buckets[scope] = _bucket_slot(empty_at, now, limit)
            return at - now


def _window_slot(times: deque[float], now: float, limit: RateLimit) -> float:
    """The earliest moment ≥ now (and ≥ the last reservation) at which one more request keeps
    every span of the window within capacity; ``times`` are the last reservations, in order."""
    at = max(now, times[-1]) if times else now
    if len(times) >= limit.capacity:  # the capacity-th latest must have left the span
        at = max(at, times[len(times) - limit.capacity] + limit.span + limit.margin)
    return at


def _bucket_slot(empty_at: float, now: float, limit: RateLimit) -> tuple[float, float]:
    """Kraken's counter: (when the call may go, when the counter will be back at 0)."""
    room_at = empty_at - (limit.capacity - 1) / limit.per_second
    at = now if room_at <= now else room_at + limit.margin
    return at, max(empty_at, at) + 1 / limit.per_second


# --- shared by every process: Redis ------------------------------------------------------------

#: KEYS[1] the scope's key; ARGV: model, capacity, span (window) or rate (bucket), margin.
#: The clock is Redis's own (TIME), so every machine reserves on one timeline.
_RESERVE: Final = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local model = ARGV[1]
local capacity = tonumber(ARGV[2])
local param = tonumber(ARGV[3])
local margin = tonumber(ARGV[4])
local key = KEYS[1]
local at = now
if model == 'window' then
  local span = param
  local n = redis.call('LLEN', key)
  if n > 0 then
    local last = tonumber(redis.call('LINDEX', key, -1))
    if last > at then at = last end
  end
  if n >= capacity then
    local bound = tonumber(redis.call('LINDEX', key, n - capacity)) + span + margin
    if bound > at then at = bound end
  end
  redis.call('RPUSH', key, string.format('%.6f', at))
  redis.call('LTRIM', key, -capacity, -1)
  redis.call('PEXPIRE', key, math.ceil((at - now + span + margin) * 1000) + 1000)
else
  local rate = param
  local empty_at = tonumber(redis.call('GET', key) or now)
  local room_at = empty_at - (capacity - 1) / rate
  if room_at > now then at = room_at + margin end
  local after = math.max(empty_at, at) + 1 / rate
  redis.call('SET', key, string.format('%.6f', after), 'PX', math.ceil((after - now) * 1000) + 1000)
end
return string.format('%.6f', at - now)
"""


class RedisRateBudget:
    """Budgets in Redis, shared by every worker process and machine.

    If Redis cannot be reached, the reservation falls back to this process's own budget
    (logged once per outage): pacing then holds per process only, and a fetch never fails
    because its budget store did.
    """

    def __init__(self, client: redis.Redis, fallback: LocalRateBudget | None = None) -> None:
        self._client = client
        self._script = client.register_script(_RESERVE)
        self._fallback = fallback or LocalRateBudget()
        self._degraded = False

    @classmethod
    def from_url(cls, url: str) -> RedisRateBudget:
        return cls(redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2))

    def reserve(self, scope: str, limit: RateLimit) -> float:
        param = limit.span if limit.model is LimitModel.WINDOW else limit.per_second
        try:
            answer = self._script(
                keys=[KEY_PREFIX + scope],
                args=[limit.model.value, limit.capacity, repr(param), repr(limit.margin)],
            )
        except redis.RedisError as error:
            if not self._degraded:
                self._degraded = True
                log.warning(
                    "rate budget store unreachable, pacing per process until it is back: %s",
                    type(error).__name__,
                )
            return self._fallback.reserve(scope, limit)
        if self._degraded:
            self._degraded = False
            log.info("rate budget store reachable again")
        return max(0.0, float(answer.decode() if isinstance(answer, bytes) else answer))

    def close(self) -> None:
        self._client.close()


# --- what a venue client holds -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pacer:
    """One account's pacing: its scope's budget and limit."""

    budget: RateBudget
    scope: str
    limit: RateLimit
    sleep: Callable[[float], None] = time.sleep

    def wait(self) -> float:
        """Reserve the next request's slot and sleep until it; the seconds slept."""
        delay = self.budget.reserve(self.scope, self.limit)
        if delay > 0:
            log.debug("paced: scope=%s wait_s=%.3f", self.scope, delay)
            self.sleep(delay)
        return delay


def key_scope(exchange: str, base_url: str, api_key: str) -> str:
    """The scope of a per-key limit: the key appears only as a digest."""
    digest = hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:24]
    return f"{exchange}|{base_url}|key:{digest}"


def ip_scope(exchange: str, base_url: str) -> str:
    """The scope of a per-IP limit: every account behind one ``base_url``."""
    return f"{exchange}|{base_url}"


__all__ = [
    "KEY_PREFIX",
    "LimitModel",
    "LocalRateBudget",
    "Pacer",
    "RateBudget",
    "RateLimit",
    "RedisRateBudget",
    "ip_scope",
    "key_scope",
]
