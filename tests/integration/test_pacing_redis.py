"""Rate budgets in a real Redis, shared by two "processes" (two budgets, two Redis clients),
against a sandbox venue that enforces its limit: paced, no request is refused; unpaced, the
same load is (so these tests can fail)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from infra.sandbox import SandboxServer
from infra.sandbox.scenario import parse_scenario
from infra.venues.dydx import DydxClient
from infra.venues.errors import VenueRateLimited
from infra.venues.pacing import (
    KEY_PREFIX,
    LimitModel,
    Pacer,
    RateLimit,
    RedisRateBudget,
    ip_scope,
)
from tests.integration.workers_harness import (  # noqa: F401  (fixtures)
    free_port,
    redis_database_fixture,
    redis_url_fixture,
)
from tests.support import DYDX_ADDRESS

pytestmark = pytest.mark.redis

ACCOUNTS = 10
#: The sandbox's dYdX limit for these tests: 4 requests per 800 ms per client IP.
LIMIT = {"requests": 4, "window_ms": 800}


def _sandbox() -> SandboxServer:
    scenario = parse_scenario(
        {
            "latency_ms": 0,
            "rate_limits": {"dydx": dict(LIMIT)},
            "accounts": [
                {
                    "id": f"sub-{n}",
                    "venue": "dydx",
                    "address": DYDX_ADDRESS,
                    "subaccount": n,
                    "assets": [{"symbol": "USDC", "side": "LONG", "size": f"{n + 1}.5"}],
                }
                for n in range(ACCOUNTS)
            ],
        }
    )
    return SandboxServer(scenario)


def _fetch_all(clients: Sequence[DydxClient]) -> list[object]:
    """Every client's fetch at once (threads); each result or the error it raised."""

    def one(client: DydxClient) -> object:
        try:
            return client.fetch_balances()
        except VenueRateLimited as error:
            return error

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        return list(pool.map(one, clients))


def _clients(
    server: SandboxServer, http: httpx.Client, pacer_of: Callable[[int], Pacer | None]
) -> list[DydxClient]:
    return [
        DydxClient(
            http,
            base_url=server.base_url,
            address=DYDX_ADDRESS,
            subaccount=n,
            timeout=5.0,
            pacer=pacer_of(n),
        )
        for n in range(ACCOUNTS)
    ]


def test_two_processes_sharing_a_redis_budget_never_provoke_a_429(redis_url: str) -> None:
    """Ten accounts behind one dYdX IP, fetched at once by two budgets on one Redis: all ten
    answer, the sandbox refused none; the budget's keys name no key or amount."""
    limit = RateLimit.in_requests(
        LimitModel.WINDOW, per_second=LIMIT["requests"] * 1000 / LIMIT["window_ms"], burst=4
    )
    budgets = [RedisRateBudget.from_url(redis_url), RedisRateBudget.from_url(redis_url)]
    try:
        with _sandbox() as server, httpx.Client() as http:
            scope = ip_scope("dydx", server.base_url)
            clients = _clients(server, http, lambda n: Pacer(budgets[n % 2], scope, limit))
            results = _fetch_all(clients)
            assert all(isinstance(r, dict) for r in results), results
            assert server.state.throttled_count() == 0
            assert [server.request_count(f"sub-{n}") for n in range(ACCOUNTS)] == [1] * ACCOUNTS
        keys = redis.Redis.from_url(redis_url).keys(f"{KEY_PREFIX}*")
        assert keys == [f"{KEY_PREFIX}{scope}".encode()]
    finally:
        for budget in budgets:
            budget.close()


def test_the_same_load_unpaced_is_refused() -> None:
    """The control: without pacing, the same burst gets 429s from the sandbox."""
    with _sandbox() as server, httpx.Client() as http:
        results = _fetch_all(_clients(server, http, lambda _: None))
        assert any(isinstance(r, VenueRateLimited) for r in results)
        assert server.state.throttled_count() > 0


def test_reservations_in_redis_keep_every_span_within_capacity(redis_url: str) -> None:
    """Forty reservations from two budgets and eight threads: the times Redis scheduled are in
    order and no span of the window holds more than its capacity; another scope is not slowed."""
    limit = RateLimit(LimitModel.WINDOW, capacity=5, per_second=25.0)  # 5 per 200 ms
    budgets = [RedisRateBudget.from_url(redis_url), RedisRateBudget.from_url(redis_url)]
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            waits = list(pool.map(lambda n: budgets[n % 2].reserve("busy", limit), range(40)))
        assert max(waits) > 0
        assert budgets[0].reserve("idle", limit) == 0.0
    finally:
        for budget in budgets:
            budget.close()
    client = redis.Redis.from_url(redis_url)
    scheduled = [float(t) for t in client.lrange(f"{KEY_PREFIX}busy", 0, -1)]
    assert len(scheduled) == limit.capacity  # the list keeps only what the next one needs
    assert scheduled == sorted(scheduled)
    assert scheduled[-1] - scheduled[0] < limit.span
    # The last reservation waited for the span since the fifth-latest before it.
    assert max(waits) >= 7 * limit.span


def test_an_unreachable_budget_store_paces_per_process_and_never_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis down: reservations fall back to this process's budget (logged once), no error."""
    budget = RedisRateBudget.from_url(f"redis://127.0.0.1:{free_port()}/0")
    limit = RateLimit(LimitModel.WINDOW, capacity=2, per_second=1.0)
    with caplog.at_level(logging.WARNING, logger="infra.venues.pacing"):
        waits = [budget.reserve("scope", limit) for _ in range(3)]
    budget.close()
    assert waits[:2] == [0.0, 0.0]
    assert waits[2] > 1.9
    warnings = [r for r in caplog.records if "rate budget store unreachable" in r.getMessage()]
    assert len(warnings) == 1
