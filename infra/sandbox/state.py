"""The sandbox's live state and the venue-independent parts of serving a request.

:class:`SandboxState` holds what changes while the sandbox runs (fault counters, rate-limit
windows, request counts), all in memory. :class:`VenueModule` is the plug-in point: a venue
contributes its routes built over the shared state. The helpers here implement the faults
whose effect is the same on every venue (latency, hangs, connection resets).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from infra.sandbox.scenario import Fault, FaultKind, RateLimit, Scenario, VenueAccount

#: ASGI scope key under which :class:`TransportCapture` leaves the connection's transport.
TRANSPORT_SCOPE_KEY: Final = "recon.sandbox.transport"

HTML_ERROR_PAGE: Final = (
    "<!DOCTYPE html>\n<html><head><title>{status} {reason}</title></head>"
    "<body><center><h1>{status} {reason}</h1></center><hr><center>cloudflare</center>"
    "</body></html>\n"
)


class FaultSchedule:
    """The fault rules of one account with the requests each has left (thread-safe)."""

    def __init__(self, faults: Sequence[Fault]) -> None:
        self._faults = tuple(faults)
        self._lock = threading.Lock()
        self._remaining = [f.times for f in self._faults]

    def take(self) -> Fault | None:
        """The first rule with requests left (consuming one), or None: serve normally (no
        rule left, or a ``none`` rule)."""
        with self._lock:
            for index, fault in enumerate(self._faults):
                left = self._remaining[index]
                if left is not None and left <= 0:
                    continue
                if left is not None:
                    self._remaining[index] = left - 1
                return None if fault.kind is FaultKind.NONE else fault
            return None

    def reset(self) -> None:
        """Every rule applies again from its first request."""
        with self._lock:
            self._remaining = [f.times for f in self._faults]


@dataclass(frozen=True, slots=True)
class RateVerdict:
    """One request's standing in its rate-limit window."""

    allowed: bool
    limit: int
    remaining: int
    reset_in_ms: int

    @property
    def reset_epoch_ms(self) -> int:
        """Wall-clock epoch milliseconds at which the window resets."""
        return int(time.time() * 1000) + self.reset_in_ms

    @property
    def retry_after_seconds(self) -> int:
        """The wait in whole seconds, rounded up (HTTP ``Retry-After``)."""
        return math.ceil(self.reset_in_ms / 1000)


class WindowLimiter:
    """Fixed-window request counting per scope key (an API key, a client IP)."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, key: str) -> RateVerdict:
        """Count one request of ``key`` and say whether it is within the limit."""
        window = self.limit.window_ms / 1000
        now = time.monotonic()
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now - start >= window:
                start, count = now, 0
            count += 1
            self._windows[key] = (start, count)
        reset_in_ms = max(1, math.ceil((start + window - now) * 1000))
        return RateVerdict(
            allowed=count <= self.limit.requests,
            limit=self.limit.requests,
            remaining=max(0, self.limit.requests - count),
            reset_in_ms=reset_in_ms,
        )

    def reset(self) -> None:
        """Forget every window."""
        with self._lock:
            self._windows.clear()


class SandboxState:
    """The running sandbox: the scenario plus in-memory counters, shared by all venues."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._schedules = {a.id: FaultSchedule(a.faults) for a in scenario.accounts}
        self._limiters = {v: WindowLimiter(limit) for v, limit in scenario.rate_limits.items()}
        self._requests: Counter[str] = Counter()
        self._throttled: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown = asyncio.Event()

    # -- per request ---------------------------------------------------------------------

    def admit(self, account: VenueAccount) -> Fault | None:
        """Count one request that reached ``account`` and pick the fault it suffers, if any."""
        with self._lock:
            self._requests[account.id] += 1
        return self._schedules[account.id].take()

    def rate_check(self, venue: str, key: str) -> RateVerdict | None:
        """Count a request against ``venue``'s limit for ``key``; None when it has no limit."""
        limiter = self._limiters.get(venue)
        if limiter is None:
            return None
        verdict = limiter.hit(key)
        if not verdict.allowed:
            with self._lock:
                self._throttled[venue] += 1
        return verdict

    def rate_limit(self, venue: str) -> RateLimit | None:
        """The scenario's limit for ``venue``, if any."""
        limiter = self._limiters.get(venue)
        return None if limiter is None else limiter.limit

    async def pause(self, account: VenueAccount | None) -> None:
        """Wait the account's (or the global) latency."""
        latency = self.scenario.latency_ms if account is None else self.scenario.latency_of(account)
        if latency > 0:
            await self.hang(latency / 1000)

    async def hang(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the sandbox is shutting down."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._shutdown.wait(), timeout=seconds)

    # -- observation and control (any thread) ---------------------------------------------

    def request_count(self, account_id: str) -> int:
        """How many requests reached the account (authenticated, not rate-limited away)."""
        with self._lock:
            return self._requests[account_id]

    def throttled_count(self, venue: str | None = None) -> int:
        """How many requests the scenario's rate limits refused (of ``venue``, or of all)."""
        with self._lock:
            if venue is None:
                return sum(self._throttled.values())
            return self._throttled[venue]

    def reset(self) -> None:
        """Fresh fault counters, rate-limit windows and request counts."""
        for schedule in self._schedules.values():
            schedule.reset()
        for limiter in self._limiters.values():
            limiter.reset()
        with self._lock:
            self._requests.clear()
            self._throttled.clear()

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the event loop serving requests (called at application startup)."""
        self._loop = loop

    def request_shutdown(self) -> None:
        """Wake every hanging request so that the server can stop promptly."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._shutdown.set)
        except RuntimeError:  # the loop closed in the meantime
            return


@dataclass(frozen=True, slots=True)
class VenueModule:
    """A venue's contribution to the sandbox app: its name and its routes."""

    name: str
    routes: Callable[[SandboxState], Sequence[BaseRoute]]


class TransportCapture:
    """Outermost ASGI layer: exposes the connection's transport so a fault can reset it.

    Uvicorn passes its protocol's bound ``send``; its ``transport`` is the TCP connection.
    Other servers simply do not get the key, and :class:`ResetConnection` falls back.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            transport = getattr(getattr(send, "__self__", None), "transport", None)
            if transport is not None:
                scope[TRANSPORT_SCOPE_KEY] = transport
        await self.app(scope, receive, send)


class ConnectionResetFault(Exception):
    """Raised to make the server drop a connection when no transport is reachable."""


class ResetConnection(Response):
    """Not a response: the TCP connection is reset (RST) without any byte of HTTP."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = scope.get(TRANSPORT_SCOPE_KEY)
        if transport is None:
            # Headers then an abrupt close: the client sees an incomplete response.
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
                }
            )
            raise ConnectionResetFault("sandbox fault: connection reset")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0: close() sends RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        # Let the server see connection_lost, so it does not try to answer.
        for _ in range(3):
            await asyncio.sleep(0)


def html_error(status: int, reason: str) -> Response:
    """An HTML error page like a CDN or load balancer sends."""
    body = HTML_ERROR_PAGE.format(status=status, reason=reason)
    return Response(body, status_code=status, media_type="text/html")


def reason_phrase(status: int) -> str:
    """The standard reason phrase of an HTTP status."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Server Error"


def truncate(body: bytes) -> bytes:
    """The first half of a body: valid start, invalid JSON."""
    return body[: max(1, len(body) // 2)]
