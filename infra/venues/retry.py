"""When to retry a failed venue fetch, and how long to wait first (DESIGN §3).

The seed's schedule: attempt 1 immediately, then retries after 0.1 s, 0.5 s and 2.5 s
(``RECONCILIATION_RETRY_COUNT`` = 3 retries after the first attempt; any retry past the third
waits 2.5 s again). Only :class:`TransientVenueError` is retried. A 429 waits what the venue
asked for (``retry_after``) instead, unless that is longer than ``max_rate_limit_wait``: then
this cycle gives up rather than hold a worker.

:meth:`RetryPolicy.delay_before_retry` is a pure decision, shared by the in-process loop
:func:`call_with_retry` and by Celery tasks::

    delay = policy.delay_before_retry(self.request.retries + 1, error)
    if delay is None:
        return failure(error)
    raise self.retry(exc=error, countdown=delay)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from domain.report import SourceError
from infra.venues.errors import TransientVenueError, VenueError, VenueRateLimited

T = TypeVar("T")

#: The seed's waits before retries 1, 2 and 3, in seconds; later retries repeat the last one.
SEED_DELAYS: Final = (0.1, 0.5, 2.5)
#: RECONCILIATION_RETRY_COUNT's default.
DEFAULT_RETRIES: Final = 3
#: The longest Retry-After honoured within a cycle, in seconds (half the default 60 s interval:
#: a longer wait would collide with the next tick).
DEFAULT_MAX_RATE_LIMIT_WAIT: Final = 30.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many retries a transient venue failure gets, and the wait before each."""

    retries: int = DEFAULT_RETRIES
    delays: tuple[float, ...] = SEED_DELAYS
    max_rate_limit_wait: float = DEFAULT_MAX_RATE_LIMIT_WAIT

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int):
            raise TypeError("retries must be an int")
        if self.retries < 0:
            raise ValueError("retries must be 0 or more")
        if not self.delays or any(not math.isfinite(d) or d < 0 for d in self.delays):
            raise ValueError("delays must be a non-empty tuple of finite, non-negative seconds")
        if not math.isfinite(self.max_rate_limit_wait) or self.max_rate_limit_wait < 0:
            raise ValueError("max_rate_limit_wait must be finite, non-negative seconds")

    @property
    def max_attempts(self) -> int:
        """The first attempt plus every retry."""
        return self.retries + 1

    def delay_before_retry(self, retry_number: int, error: SourceError) -> float | None:
        """Seconds to wait before retry ``retry_number`` (1 = the first retry) after ``error``.

        None means do not retry: the error is permanent, the retries are spent, or the venue
        asked for a longer wait than ``max_rate_limit_wait``.
        """
        if not isinstance(error, TransientVenueError):
            return None
        if retry_number < 1 or retry_number > self.retries:
            return None
        if isinstance(error, VenueRateLimited) and error.retry_after is not None:
            if error.retry_after > self.max_rate_limit_wait:
                return None
            return max(0.0, error.retry_after)
        return self.delays[min(retry_number, len(self.delays)) - 1]


def call_with_retry(
    fetch: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, VenueError, float], None] | None = None,
) -> T:
    """``fetch()``, retried on ``policy``; raises the last VenueError once it gives up.

    ``on_retry(retry_number, error, delay)`` is called before each wait (for logging and
    metrics). Exceptions other than VenueError are bugs, not venue failures: they propagate at
    once.
    """
    retry_number = 0
    while True:
        try:
            return fetch()
        except VenueError as error:
            retry_number += 1
            delay = policy.delay_before_retry(retry_number, error)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(retry_number, error, delay)
            sleep(delay)
