"""The HTTP book against MockTransport: one fetch per cycle, exact amounts, every failure a kind."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import pytest

from domain.report import ErrorKind, SourceError
from infra.book.document import BookError
from infra.book.http_book import HttpBook, public_url

URL = "http://pm.internal:8080/balances"
BOOK = {
    "as_of": "2026-11-24T00:00:00Z",
    "accounts": {
        "cb-main": {"BTC": "1.25", "USD": "1000.00"},
        "dydx-0": {"USDC": "15552.318", "ETH/USD:USDC": "-1.5"},
    },
}
SECRET_AMOUNT = "98765.4321"

Handler = Callable[[httpx.Request], httpx.Response]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counting:
    """A MockTransport handler that counts the requests it answers."""

    def __init__(self, respond: Handler) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
        return self.respond(request)


def _json(body: object, status: int = 200) -> Handler:
    return lambda _request: httpx.Response(status, json=body)


def _raw(content: bytes, status: int = 200, content_type: str = "application/json") -> Handler:
    return lambda _request: httpx.Response(
        status, content=content, headers={"Content-Type": content_type}
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_book(clock: FakeClock) -> Iterator[Callable[..., tuple[HttpBook, Counting]]]:
    clients: list[httpx.Client] = []

    def make(respond: Handler, url: str = URL, max_age: float = 5.0) -> tuple[HttpBook, Counting]:
        counting = Counting(respond)
        http = httpx.Client(transport=httpx.MockTransport(counting))
        clients.append(http)
        return HttpBook(http, url, timeout=2.0, max_age=max_age, clock=clock), counting

    yield make
    for http in clients:
        http.close()


def _failure(book: HttpBook, account: str = "cb-main") -> BookError:
    with pytest.raises(BookError) as caught:
        book.balances(account)
    assert isinstance(caught.value, SourceError)
    return caught.value


def test_balances_come_from_the_book_json_exactly(make_book) -> None:
    """A 200 with the file book's JSON gives each account's exact Decimal balances."""
    book, counting = make_book(_json(BOOK))
    assert book.balances("cb-main") == {"BTC": Decimal("1.25"), "USD": Decimal("1000.00")}
    assert book.balances("dydx-0") == {
        "USDC": Decimal("15552.318"),
        "ETH/USD:USDC": Decimal("-1.5"),
    }
    assert counting.requests[0].method == "GET"
    assert str(counting.requests[0].url) == URL
    assert counting.requests[0].headers["Accept"] == "application/json"


def test_json_numbers_are_exact_not_floats(make_book) -> None:
    """Amounts sent as JSON numbers are parsed exactly, never through float."""
    raw = b'{"accounts": {"a": {"BTC": 0.1, "ETH": 1.2345678901234567890123}}}'
    book, _ = make_book(_raw(raw))
    balances = book.balances("a")
    assert balances == {"BTC": Decimal("0.1"), "ETH": Decimal("1.2345678901234567890123")}


def test_an_account_absent_from_the_book_has_an_empty_book(make_book) -> None:
    """An account the served book does not list is an empty book, not an error."""
    book, _ = make_book(_json(BOOK))
    assert book.balances("kr-1") == {}


def test_one_request_serves_every_account_of_a_cycle(make_book) -> None:
    """N accounts read within max_age share one GET: the book is fetched once per cycle."""
    book, counting = make_book(_json(BOOK))
    for account in ["cb-main", "dydx-0", "kr-1", "cb-main"] * 25:
        book.balances(account)
    assert len(counting.requests) == 1


def test_the_snapshot_is_refetched_once_it_is_max_age_old(make_book, clock) -> None:
    """A call max_age seconds after the fetch reads the book again, and sees the update."""
    served = {"body": BOOK}
    book, counting = make_book(lambda _r: httpx.Response(200, json=served["body"]))
    assert book.balances("cb-main")["BTC"] == Decimal("1.25")
    served["body"] = {"accounts": {"cb-main": {"BTC": "2"}}}
    clock.now += 4.9
    assert book.balances("cb-main")["BTC"] == Decimal("1.25")
    clock.now += 0.1
    assert book.balances("cb-main") == {"BTC": Decimal(2)}
    assert len(counting.requests) == 2


def test_invalidate_forces_a_fresh_read(make_book) -> None:
    """After invalidate(), the next call fetches even within max_age."""
    book, counting = make_book(_json(BOOK))
    book.balances("cb-main")
    book.invalidate()
    book.balances("cb-main")
    assert len(counting.requests) == 2


def test_concurrent_readers_share_one_fetch(make_book) -> None:
    """Threads reading different accounts at once wait for one request instead of racing."""
    release = threading.Event()

    def slow(_request: httpx.Request) -> httpx.Response:
        release.wait(5)
        return httpx.Response(200, json=BOOK)

    book, counting = make_book(slow)
    results: dict[str, dict[str, Decimal]] = {}

    def read(account: str) -> None:
        results[account] = book.balances(account)

    threads = [threading.Thread(target=read, args=(a,)) for a in ("cb-main", "dydx-0", "x") * 4]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(5)
    assert len(counting.requests) == 1
    assert results["cb-main"]["BTC"] == Decimal("1.25")
    assert results["x"] == {}


def _timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def _reset(request: httpx.Request) -> httpx.Response:
    raise httpx.RemoteProtocolError("peer closed connection", request=request)


@pytest.mark.parametrize(
    ("respond", "kind"),
    [
        (_timeout, ErrorKind.TIMEOUT),
        (_refused, ErrorKind.UNAVAILABLE),
        (_reset, ErrorKind.UNAVAILABLE),
        (_json({"error": "INTERNAL"}, 500), ErrorKind.UNAVAILABLE),
        (_raw(b"<html>Bad gateway</html>", 502, "text/html"), ErrorKind.UNAVAILABLE),
        (_json({"error": "too many"}, 429), ErrorKind.RATE_LIMITED),
        (_raw(b"Unauthorized", 401, "text/plain"), ErrorKind.AUTH),
        (_json({"error": "PERMISSION_DENIED"}, 403), ErrorKind.AUTH),
        (_json({"error": "NOT_FOUND"}, 404), ErrorKind.CONFIG),
        (_raw(b"", 408), ErrorKind.TIMEOUT),
        (lambda _r: httpx.Response(302, headers={"Location": "/login"}), ErrorKind.CONFIG),
    ],
    ids=[
        "timeout",
        "refused",
        "reset",
        "500",
        "502-html",
        "429",
        "401",
        "403",
        "404",
        "408",
        "302",
    ],
)
def test_transport_and_status_failures_have_their_kind(make_book, respond, kind) -> None:
    """Timeouts, refused/reset connections and non-2xx statuses are BookErrors of their kind."""
    book, _ = make_book(respond)
    error = _failure(book)
    assert error.kind is kind
    assert error.message.startswith(f"book {URL}: ")


@pytest.mark.parametrize(
    "raw",
    [
        b"<html><body>Position manager</body></html>",
        json.dumps(BOOK).encode()[:-7],
        b'{"accounts": {"cb-main": {"BTC": NaN}}}',
        b'{"accounts": {"cb-main": {"BTC": "NaN"}}}',
        b'{"accounts": {"cb-main": {"BTC": "1e400"}}}',
        b'{"accounts": {"cb-main": {"BTC": "1", "BTC": "2"}}}',
        b'{"accounts": ["cb-main"]}',
        b"[]",
        b"",
    ],
    ids=["html", "truncated", "nan", "nan-text", "absurd", "duplicate", "list", "array", "empty"],
)
def test_a_2xx_body_that_is_not_the_book_is_malformed(make_book, raw) -> None:
    """HTML, truncated JSON, NaN, absurd amounts or a wrong shape: malformed, never empty."""
    book, _ = make_book(_raw(raw))
    error = _failure(book)
    assert error.kind is ErrorKind.MALFORMED
    error = _failure(book, "an-account-absent-from-any-book")
    assert error.kind is ErrorKind.MALFORMED


def test_a_failed_fetch_is_remembered_for_max_age(make_book, clock) -> None:
    """N accounts over a failing book send one request; each gets the error; it ends at max_age."""
    book, counting = make_book(_json({}, 503))
    errors = [_failure(book, account) for account in ("a", "b", "c")]
    assert {e.kind for e in errors} == {ErrorKind.UNAVAILABLE}
    assert len({id(e) for e in errors}) == 3
    assert len(counting.requests) == 1
    clock.now += 5
    _failure(book)
    assert len(counting.requests) == 2


def test_a_book_that_comes_back_is_read_again(make_book, clock) -> None:
    """After a failure expires, a healthy response is served: errors are not sticky."""
    state = {"up": False}

    def flaky(request: httpx.Request) -> httpx.Response:
        if not state["up"]:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=BOOK)

    book, _ = make_book(flaky)
    assert _failure(book).kind is ErrorKind.UNAVAILABLE
    state["up"] = True
    clock.now += 5
    assert book.balances("cb-main")["USD"] == Decimal("1000.00")


def test_messages_hold_neither_credentials_nor_query_nor_amounts(make_book) -> None:
    """The URL in a message loses userinfo, query and fragment; no amount is ever echoed."""
    url = "http://reader:s3cr3t@pm.internal:8080/balances?token=abc123#x"
    raw = json.dumps({"accounts": {"cb-main": {"BTC": SECRET_AMOUNT, "ETH": "NaN"}}}).encode()
    for respond in (_raw(raw), _raw(SECRET_AMOUNT.encode(), 500), _timeout):
        book, _ = make_book(respond, url=url)
        message = _failure(book).message
        assert message.startswith("book http://pm.internal:8080/balances: ")
        for leaked in ("reader", "s3cr3t", "token", "abc123", SECRET_AMOUNT, "98765"):
            assert leaked not in message


def test_userinfo_in_the_url_is_sent_as_basic_auth(make_book) -> None:
    """Credentials in the URL still authenticate the request (httpx sends them as Basic)."""
    book, counting = make_book(_json(BOOK), url="http://reader:pw@pm.internal/balances")
    book.balances("cb-main")
    assert counting.requests[0].headers["Authorization"].startswith("Basic ")


def test_a_non_http_url_is_a_config_error() -> None:
    """A URL whose scheme httpx cannot speak is a config error, not an empty book."""
    with httpx.Client() as http:  # refused before any connection: no network is used
        book = HttpBook(http, "ftp://pm.internal/balances", timeout=1.0)
        assert _failure(book).kind is ErrorKind.CONFIG


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@pm.internal:8443/a/b?k=v#f", "https://pm.internal:8443/a/b"),
        ("http://[::1]:9000/book", "http://[::1]:9000/book"),
        ("http://pm.internal/book", "http://pm.internal/book"),
        ("http://pm.internal:notaport/book", "<unparsable URL>"),
    ],
)
def test_public_url_strips_what_may_be_secret(url, shown) -> None:
    """public_url keeps scheme, host, port and path only."""
    assert public_url(url) == shown


def test_constructor_refuses_nonsense_timings() -> None:
    """A non-positive timeout or a negative max_age is a programming error."""
    with httpx.Client() as http:
        with pytest.raises(ValueError):
            HttpBook(http, URL, timeout=0)
        with pytest.raises(ValueError):
            HttpBook(http, URL, timeout=1, max_age=-1)
