"""Kraken request signing (the published vector) and the strictly growing per-key nonces."""

from __future__ import annotations

import base64
import itertools
import threading
from collections.abc import Iterator

import pytest

from infra.venues.kraken import (
    PROCESS_NONCES,
    KrakenKeyError,
    NonceSource,
    decode_secret,
    sign,
)

# The published test vector, quoted in exchange-apis.md §3.
VECTOR_SECRET = (
    "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
)
VECTOR_PATH = "/0/private/AddOrder"
VECTOR_NONCE = 1616492376594
VECTOR_POSTDATA = "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
VECTOR_SIGNATURE = (
    "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="
)


def test_sign_reproduces_the_published_vector() -> None:
    """sign() gives exactly the API-Sign of Kraken's published AddOrder example."""
    assert sign(VECTOR_PATH, VECTOR_NONCE, VECTOR_POSTDATA, VECTOR_SECRET) == VECTOR_SIGNATURE


@pytest.mark.parametrize(
    ("path", "nonce", "postdata"),
    [
        ("/0/private/Balance", VECTOR_NONCE, VECTOR_POSTDATA),
        (VECTOR_PATH, VECTOR_NONCE + 1, VECTOR_POSTDATA),
        (VECTOR_PATH, VECTOR_NONCE, VECTOR_POSTDATA + "&x=1"),
    ],
)
def test_sign_covers_path_nonce_and_body(path: str, nonce: int, postdata: str) -> None:
    """Changing the path, the nonce or the body changes the signature."""
    assert sign(path, nonce, postdata, VECTOR_SECRET) != VECTOR_SIGNATURE


def test_sign_ignores_whitespace_around_the_secret() -> None:
    """A secret read from a file with a trailing newline signs the same."""
    assert sign(VECTOR_PATH, VECTOR_NONCE, VECTOR_POSTDATA, VECTOR_SECRET + "\n") == (
        VECTOR_SIGNATURE
    )


@pytest.mark.parametrize("secret", ["", "   ", "not base64!!", "abc"])
def test_a_secret_that_is_not_base64_is_refused_without_echoing_it(secret: str) -> None:
    """An empty or non-base64 secret raises KrakenKeyError whose message does not contain it."""
    with pytest.raises(KrakenKeyError) as caught:
        decode_secret(secret)
    if secret.strip():
        assert secret not in str(caught.value)


def test_decode_secret_returns_the_hmac_key_bytes() -> None:
    """The HMAC key is the base64-decoded secret."""
    assert decode_secret(VECTOR_SECRET) == base64.b64decode(VECTOR_SECRET)


# --- nonces --------------------------------------------------------------------------------------


def frozen(value: int) -> NonceSource:
    return NonceSource(clock_ms=lambda: value)


def test_nonce_is_the_clock_in_milliseconds_when_it_has_moved_on() -> None:
    """With a clock ahead of the last nonce, the nonce is the clock's epoch milliseconds."""
    ticks: Iterator[int] = iter([1_700_000_000_000, 1_700_000_000_500])
    source = NonceSource(clock_ms=lambda: next(ticks))
    assert [source.next("k"), source.next("k")] == [1_700_000_000_000, 1_700_000_000_500]


def test_nonce_grows_by_one_within_one_millisecond() -> None:
    """Calls faster than the clock's resolution still get strictly growing nonces."""
    source = frozen(1_000)
    assert [source.next("k") for _ in range(4)] == [1_000, 1_001, 1_002, 1_003]


def test_nonce_keeps_growing_when_the_clock_steps_back() -> None:
    """A wall clock stepped back (NTP) never makes a nonce go down."""
    ticks = iter([5_000, 4_000, 4_001, 6_000])
    source = NonceSource(clock_ms=lambda: next(ticks))
    assert [source.next("k") for _ in range(4)] == [5_000, 5_001, 5_002, 6_000]


def test_nonces_are_counted_per_api_key() -> None:
    """Each API key has its own sequence: one key's calls do not push another's."""
    source = frozen(1_000)
    assert [source.next("a"), source.next("a"), source.next("b")] == [1_000, 1_001, 1_000]


def test_many_threads_get_unique_strictly_increasing_nonces() -> None:
    """Concurrent callers of one key get unique nonces, increasing in each thread's own order."""
    source = frozen(1_000)
    threads_count, per_thread = 16, 250
    barrier = threading.Barrier(threads_count)
    seen: list[list[int]] = [[] for _ in range(threads_count)]

    def worker(index: int) -> None:
        barrier.wait()
        for _ in range(per_thread):
            seen[index].append(source.next("shared-key"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for own in seen:
        assert all(a < b for a, b in itertools.pairwise(own))
    every = [n for own in seen for n in own]
    assert sorted(every) == list(range(1_000, 1_000 + threads_count * per_thread))


def test_the_process_wide_source_uses_the_real_clock_in_milliseconds() -> None:
    """PROCESS_NONCES hands out epoch-millisecond nonces (13 digits today), strictly growing."""
    first = PROCESS_NONCES.next("test-process-wide-key")
    second = PROCESS_NONCES.next("test-process-wide-key")
    assert len(str(first)) == 13
    assert second > first


def test_after_fork_keeps_the_sequence() -> None:
    """The fork hook replaces the lock only: nonces handed out before stay lower bounds."""
    source = frozen(1_000)
    source.next("k")
    source.after_fork()
    assert source.next("k") == 1_001
