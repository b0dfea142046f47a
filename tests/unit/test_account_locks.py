"""Single flight: an account is reconciled by at most one running cycle at a time."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from infra.locks import KEY_PREFIX, AccountLocks, LocalAccountLocks, RedisAccountLocks


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis_locks() -> Iterator[RedisAccountLocks]:
    """Locks on the machine's Redis (skips off CI when it is unreachable, fails on CI)."""
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        message = f"Redis not reachable at 127.0.0.1:6379: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    locks = RedisAccountLocks(client)
    yield locks
    locks.close()


def _accounts() -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"test-{tag}-a", f"test-{tag}-b"]


def _exercise(locks: AccountLocks) -> None:
    a, b = _accounts()
    first = locks.acquire([a, b], "cycle-1", 60)
    assert first.held == (a, b)
    assert first.busy == ()
    second = locks.acquire([a, b], "cycle-2", 60)
    assert second.held == ()
    assert second.busy == (a, b)
    again = locks.acquire([a], "cycle-1", 60)  # the same cycle, redelivered
    assert again.held == (a,)
    assert locks.release([a, b], "cycle-2") == 0  # not the holder: nothing released
    assert locks.release([a, b], "cycle-1") == 2
    assert locks.acquire([a, b], "cycle-2", 60).held == (a, b)
    locks.release([a, b], "cycle-2")


def test_local_locks_are_single_flight_and_reentrant_per_cycle() -> None:
    """A second cycle is refused, the first may re-acquire, release frees for the next."""
    _exercise(LocalAccountLocks())


def test_local_lock_expires_after_its_ttl() -> None:
    """A crashed cycle stops blocking the account once its TTL passes."""
    clock = FakeClock()
    locks = LocalAccountLocks(clock)
    assert locks.acquire(["x"], "c1", 10).held == ("x",)
    clock.now = 9.9
    assert locks.acquire(["x"], "c2", 10).busy == ("x",)
    clock.now = 10.0
    assert locks.acquire(["x"], "c2", 10).held == ("x",)


@pytest.mark.redis
def test_redis_locks_are_single_flight_and_reentrant_per_cycle(
    redis_locks: RedisAccountLocks,
) -> None:
    """The same contract on Redis, shared by every worker and machine."""
    _exercise(redis_locks)


@pytest.mark.redis
def test_redis_lock_carries_a_ttl(redis_locks: RedisAccountLocks) -> None:
    """Each Redis lock expires by itself (PX), so a crashed cycle frees its accounts."""
    (account,) = _accounts()[:1]
    redis_locks.acquire([account], "c1", 30)
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        ttl_ms = client.pttl(KEY_PREFIX + account)
        assert 0 < ttl_ms <= 30_000
    finally:
        redis_locks.release([account], "c1")
        client.close()
