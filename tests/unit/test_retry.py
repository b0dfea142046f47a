"""The retry policy: the seed's schedule, which errors retry, and Retry-After honoured."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from infra.venues.errors import (
    MalformedVenueResponse,
    VenueAuthError,
    VenueConfigError,
    VenueError,
    VenueRateLimited,
    VenueTimeout,
    VenueUnavailable,
)
from infra.venues.retry import RetryPolicy, call_with_retry


class Script:
    """A fetch that raises the scripted errors in turn, then returns ``result``."""

    def __init__(self, *errors: VenueError | Exception, result: str = "balances") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


class Always:
    """A fetch that always fails, with a new error each time."""

    def __init__(self, make: Callable[[], VenueError]) -> None:
        self.make = make
        self.raised: list[VenueError] = []

    def __call__(self) -> str:
        error = self.make()
        self.raised.append(error)
        raise error


def run(fetch: Callable[[], str], policy: RetryPolicy) -> tuple[list[float], str | VenueError]:
    """Delays slept, and the result or the error raised."""
    slept: list[float] = []
    try:
        return slept, call_with_retry(fetch, policy, sleep=slept.append)
    except VenueError as error:
        return slept, error


def test_default_schedule_is_the_seeds() -> None:
    """Three retries after the first attempt, waiting 0.1 s, 0.5 s, then 2.5 s."""
    fetch = Always(lambda: VenueUnavailable("down"))
    slept, outcome = run(fetch, RetryPolicy())
    assert slept == [0.1, 0.5, 2.5]
    assert len(fetch.raised) == 4
    assert outcome is fetch.raised[-1]


def test_retry_count_zero_makes_one_attempt() -> None:
    """RECONCILIATION_RETRY_COUNT=0: the first failure is final, with no wait."""
    fetch = Always(lambda: VenueTimeout("slow"))
    slept, outcome = run(fetch, RetryPolicy(retries=0))
    assert slept == []
    assert len(fetch.raised) == 1
    assert isinstance(outcome, VenueTimeout)


def test_retry_count_five_repeats_the_last_wait() -> None:
    """Retries past the third wait 2.5 s each."""
    fetch = Always(lambda: VenueUnavailable("down"))
    slept, _ = run(fetch, RetryPolicy(retries=5))
    assert slept == [0.1, 0.5, 2.5, 2.5, 2.5]
    assert len(fetch.raised) == 6


@pytest.mark.parametrize(
    "error",
    [VenueAuthError("no"), MalformedVenueResponse("bad"), VenueConfigError("who")],
)
def test_permanent_errors_are_not_retried(error: VenueError) -> None:
    """Auth, malformed and config errors fail at once."""
    fetch = Script(error)
    slept, outcome = run(fetch, RetryPolicy())
    assert (slept, outcome, fetch.calls) == ([], error, 1)


def test_rate_limited_waits_what_the_venue_asked() -> None:
    """A 429 with Retry-After waits that long instead of the schedule's step."""
    fetch = Script(VenueRateLimited("429", retry_after=1.5), VenueRateLimited("429", retry_after=0))
    slept, outcome = run(fetch, RetryPolicy())
    assert slept == [1.5, 0.0]
    assert outcome == "balances"


def test_rate_limited_without_retry_after_follows_the_schedule() -> None:
    """A 429 without Retry-After waits the schedule's step."""
    slept, outcome = run(Script(VenueRateLimited("429")), RetryPolicy())
    assert (slept, outcome) == ([0.1], "balances")


def test_rate_limit_wait_beyond_the_cap_gives_up() -> None:
    """A Retry-After longer than max_rate_limit_wait ends the cycle's attempts at once."""
    error = VenueRateLimited("429", retry_after=31)
    fetch = Script(error)
    slept, outcome = run(fetch, RetryPolicy())
    assert (slept, outcome, fetch.calls) == ([], error, 1)
    assert RetryPolicy(max_rate_limit_wait=60).delay_before_retry(1, error) == 31


def test_recovers_after_two_failures() -> None:
    """Two transient failures then success returns the balances after two waits."""
    fetch = Script(VenueTimeout("slow"), VenueUnavailable("reset"))
    slept, outcome = run(fetch, RetryPolicy())
    assert (slept, outcome, fetch.calls) == ([0.1, 0.5], "balances", 3)


def test_on_retry_sees_each_retry_before_its_wait() -> None:
    """on_retry receives the retry number, the error and the delay, once per retry."""
    first, second = VenueTimeout("a"), VenueUnavailable("b")
    seen: list[tuple[int, VenueError, float]] = []
    result = call_with_retry(
        Script(first, second),
        RetryPolicy(),
        sleep=lambda _: None,
        on_retry=lambda n, e, d: seen.append((n, e, d)),
    )
    assert result == "balances"
    assert seen == [(1, first, 0.1), (2, second, 0.5)]


def test_non_venue_exceptions_propagate_at_once() -> None:
    """A bug (not a VenueError) is not retried."""
    fetch = Script(KeyError("bug"))
    slept: list[float] = []
    with pytest.raises(KeyError):
        call_with_retry(fetch, RetryPolicy(), sleep=slept.append)
    assert (slept, fetch.calls) == ([], 1)


@pytest.mark.parametrize(
    ("retry_number", "expected"),
    [(0, None), (1, 0.1), (2, 0.5), (3, 2.5), (4, None)],
)
def test_delay_before_retry_is_a_pure_decision(retry_number: int, expected: float | None) -> None:
    """The decision Celery tasks use: 1-based retry number in, countdown or None out."""
    assert RetryPolicy().delay_before_retry(retry_number, VenueUnavailable("x")) == expected


@pytest.mark.parametrize(
    "options",
    [{"retries": -1}, {"delays": ()}, {"delays": (0.1, -1.0)}, {"max_rate_limit_wait": -1}],
)
def test_invalid_policies_are_refused(options: dict[str, object]) -> None:
    """A negative retry count, an empty or negative schedule is a ValueError."""
    with pytest.raises(ValueError):
        RetryPolicy(**options)  # type: ignore[arg-type]
