"""The physical floor of a scenario: the shortest cycle any design could achieve.

A cycle cannot end before its slowest venue request has come back (the venue's latency), nor
before every rate-limit scope (an API key, or a client IP: one endpoint) has been allowed all
the requests the cycle needs. The sandbox's limits are fixed windows: a window opens at the
first request of a scope and admits ``requests`` in ``window_s``; a request beyond that waits
for the window to end. So the first ``requests`` of a scope go at once (the burst), each
further batch one window later: a scope that must make ``n`` requests takes at least
``latency + ((n - 1) // requests) × window``.

A cycle whose first look finds WARNING-or-worse breaks confirms them (DESIGN's recovery): once
every account is compared, the flagged accounts are fetched again after
``RECONCILIATION_CONFIRM_DELAY_SECONDS``, and the cycle's result comes after that second look.
Its requests count against the same windows as the first round's: on an endpoint whose window
the first round filled, the second round waits for the window to end.

The floor is the end of the last request of the last round over every scope of every endpoint,
each request sent as early as its limit allows. Celery, the database and the client's own work
are not part of it: they are what the ratio ``wall / floor`` measures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class FixedWindow:
    """A venue's published limit as the sandbox enforces it: ``requests`` per ``window_s``."""

    requests: int
    window_s: float

    def __post_init__(self) -> None:
        if self.requests < 1 or self.window_s <= 0:
            raise ValueError("a rate limit needs at least 1 request per positive window")


@dataclass(frozen=True, slots=True)
class EndpointLoad:
    """What one venue endpoint must serve in a cycle.

    ``scope_requests`` holds, per rate-limit scope of the endpoint, the requests of the fetch
    round: one entry per API key for per-key limits, a single entry (every request of the
    endpoint) for per-IP limits. ``confirm_requests``, when given, holds the same scopes'
    requests in the confirming re-fetch.
    """

    name: str
    latency_s: float
    scope_requests: tuple[int, ...]
    limit: FixedWindow | None = None
    confirm_requests: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.confirm_requests and len(self.confirm_requests) != len(self.scope_requests):
            raise ValueError("confirm_requests must name the same scopes as scope_requests")


@dataclass(frozen=True, slots=True)
class Floor:
    """A scenario's floor in seconds, the endpoint that sets it, and why."""

    seconds: float
    endpoint: str
    bound: str  # "latency", "rate limit", "latency + confirm latency", …


class _Window:
    """One scope's fixed-window limiter, as the sandbox's ``WindowLimiter`` counts."""

    def __init__(self, limit: FixedWindow | None) -> None:
        self.limit = limit
        self.start: float | None = None
        self.used = 0

    def send(self, ready: float, count: int) -> float:
        """Send ``count`` requests, none before ``ready``, each as soon as the window allows;
        the time the last one is sent (``ready`` if none)."""
        last = ready
        for _ in range(count):
            at = ready
            limit = self.limit
            if limit is not None:
                if self.start is None or at - self.start >= limit.window_s - _EPSILON:
                    self.start, self.used = at, 0
                if self.used >= limit.requests:
                    at = self.start + limit.window_s
                    self.start, self.used = at, 0
                self.used += 1
            ready = last = at
        return last


def scope_seconds(requests: int, latency_s: float, limit: FixedWindow | None) -> float:
    """The shortest time in which one scope, fresh, can get ``requests`` answers."""
    if requests <= 0:
        return 0.0
    return _Window(limit).send(0.0, requests) + latency_s


def _round(
    loads: Sequence[EndpointLoad],
    windows: dict[tuple[int, int], _Window],
    start: float,
    *,
    confirm: bool,
) -> tuple[float, str]:
    """Run one round from ``start``: its end and the endpoint that ends it last."""
    end, endpoint = start, "-"
    for e, load in enumerate(loads):
        counts = load.confirm_requests if confirm else load.scope_requests
        for s, count in enumerate(counts):
            if count <= 0:
                continue
            window = windows.setdefault((e, s), _Window(load.limit))
            finished = window.send(start, count) + load.latency_s
            if finished > end + _EPSILON:
                end, endpoint = finished, load.name
    return end, endpoint


def cycle_floor(loads: Sequence[EndpointLoad], confirm_delay_s: float = 0.0) -> Floor:
    """The floor of a cycle over ``loads``: the fetch round, then (when any scope has
    ``confirm_requests``) the confirm delay and the confirming re-fetch."""
    windows: dict[tuple[int, int], _Window] = {}
    first, endpoint = _round(loads, windows, 0.0, confirm=False)
    latency_only = max((load.latency_s for load in loads if any(load.scope_requests)), default=0.0)
    bound = "latency" if first <= latency_only + _EPSILON else "rate limit"
    if not any(n > 0 for load in loads for n in load.confirm_requests):
        return Floor(first, endpoint, bound)
    second_start = first + confirm_delay_s
    second, second_endpoint = _round(loads, windows, second_start, confirm=True)
    confirm_latency = max(
        (load.latency_s for load in loads if any(load.confirm_requests)), default=0.0
    )
    second_bound = (
        "latency" if second <= second_start + confirm_latency + _EPSILON else "rate limit"
    )
    return Floor(second, second_endpoint, f"{bound} + confirm {second_bound}")


def scenario_floor(loads: Sequence[EndpointLoad]) -> Floor:
    """The floor of the fetch round alone (no confirmation)."""
    stripped = [
        EndpointLoad(load.name, load.latency_s, load.scope_requests, load.limit) for load in loads
    ]
    return cycle_floor(stripped)
