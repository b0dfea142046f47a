"""Single-flight locks per account: a cycle reconciles an account only if no other cycle is.

A lock is held under the cycle's id (the token) until the cycle's join releases it, or until
its time-to-live passes (a crashed cycle never blocks an account for longer than that).
Acquiring again with the same token succeeds, so a redelivered tick resumes its own cycle.

:class:`RedisAccountLocks` is shared by every worker process and machine (``SET NX PX``, and a
compare-and-delete script to release). :class:`LocalAccountLocks` serves the embedded default,
where beat, worker and join share one process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import redis

KEY_PREFIX: Final = "recon:lock:account:"

# Release only what this token holds: a lock that expired and was taken by another cycle
# is left alone.
_RELEASE_SCRIPT: Final = """
local released = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released
"""


@dataclass(frozen=True, slots=True)
class Acquired:
    """Which of the requested accounts this cycle now holds, and which another cycle holds."""

    held: tuple[str, ...]
    busy: tuple[str, ...]


class AccountLocks(Protocol):
    """The single-flight port."""

    def acquire(self, account_ids: Sequence[str], token: str, ttl_seconds: float) -> Acquired: ...

    def release(self, account_ids: Sequence[str], token: str) -> int: ...


class RedisAccountLocks:
    """Account locks in Redis, shared across workers and machines."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._release = client.register_script(_RELEASE_SCRIPT)

    @classmethod
    def from_url(cls, url: str) -> RedisAccountLocks:
        """Locks on the Redis server at ``url`` (connects lazily, on first use)."""
        return cls(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5))

    def acquire(self, account_ids: Sequence[str], token: str, ttl_seconds: float) -> Acquired:
        ttl_ms = max(1, int(ttl_seconds * 1000))
        held: list[str] = []
        busy: list[str] = []
        for account_id in account_ids:
            key = KEY_PREFIX + account_id
            if self._client.set(key, token, nx=True, px=ttl_ms):
                held.append(account_id)
                continue
            current = self._client.get(key)
            if isinstance(current, bytes) and current.decode() == token:
                held.append(account_id)  # our own cycle, redelivered
            else:
                busy.append(account_id)
        return Acquired(tuple(held), tuple(busy))

    def release(self, account_ids: Sequence[str], token: str) -> int:
        if not account_ids:
            return 0
        keys = [KEY_PREFIX + a for a in account_ids]
        return int(self._release(keys=keys, args=[token]))

    def close(self) -> None:
        self._client.close()


class LocalAccountLocks:
    """Account locks inside one process (the embedded default)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._mutex = threading.Lock()
        self._held: dict[str, tuple[str, float]] = {}

    def acquire(self, account_ids: Sequence[str], token: str, ttl_seconds: float) -> Acquired:
        held: list[str] = []
        busy: list[str] = []
        with self._mutex:
            now = self._clock()
            for account_id in account_ids:
                current = self._held.get(account_id)
                if current is None or current[1] <= now or current[0] == token:
                    self._held[account_id] = (token, now + ttl_seconds)
                    held.append(account_id)
                else:
                    busy.append(account_id)
        return Acquired(tuple(held), tuple(busy))

    def release(self, account_ids: Sequence[str], token: str) -> int:
        released = 0
        with self._mutex:
            for account_id in account_ids:
                current = self._held.get(account_id)
                if current is not None and current[0] == token:
                    del self._held[account_id]
                    released += 1
        return released

    def close(self) -> None:
        """Nothing to close."""
