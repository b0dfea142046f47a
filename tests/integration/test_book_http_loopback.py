"""The HTTP book against a real server on 127.0.0.1: real sockets, real timeouts, real refusals."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from domain.report import ErrorKind
from infra.book.document import BookError
from infra.book.http_book import HttpBook

BOOK = {
    "as_of": "2026-11-24T00:00:00Z",
    "accounts": {
        "cb-main": {"BTC": "1.25", "USD": "1000.00"},
        "dydx-0": {"USDC": "15552.318", "ETH/USD:USDC": "-1.5"},
    },
}
BOOK_BYTES = json.dumps(BOOK).encode()


class _Handler(BaseHTTPRequestHandler):
    """Serves one canned response per path; /slow holds the answer until the test ends."""

    server: _BookServer
    routes: ClassVar[dict[str, tuple[int, str, bytes]]] = {
        "/book": (200, "application/json", BOOK_BYTES),
        "/500": (500, "application/json", b'{"error": "INTERNAL"}'),
        "/404": (404, "text/plain", b"Not Found"),
        "/401": (401, "text/plain", b"Unauthorized"),
        "/403": (403, "application/json", b'{"error": "PERMISSION_DENIED"}'),
        "/html": (200, "text/html", b"<html><body>Sign in</body></html>"),
        "/truncated": (200, "application/json", BOOK_BYTES[: len(BOOK_BYTES) // 2]),
        "/nan": (200, "application/json", b'{"accounts": {"cb-main": {"BTC": "NaN"}}}'),
    }

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.server.count(path)
        if path == "/slow":
            self.server.release.wait(10)
            status, content_type, body = 200, "application/json", BOOK_BYTES
        else:
            status, content_type, body = self.routes.get(path, (404, "text/plain", b"no route"))
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (the timeout test): nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        del format, args  # keep test output quiet


class _BookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.release = threading.Event()
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()

    def count(self, path: str) -> None:
        with self._lock:
            self.hits[path] = self.hits.get(path, 0) + 1

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


@pytest.fixture(scope="module")
def server() -> Iterator[_BookServer]:
    httpd = _BookServer()
    thread = threading.Thread(target=httpd.serve_forever, name="book-server", daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def _failure(book: HttpBook) -> BookError:
    with pytest.raises(BookError) as caught:
        book.balances("cb-main")
    return caught.value


def test_the_served_book_is_read_once_for_every_account(server, http) -> None:
    """One real GET serves many accounts with exact balances; an absent account is empty."""
    before = server.hits.get("/book", 0)
    book = HttpBook(http, server.base_url + "/book", timeout=5.0)
    assert book.balances("cb-main") == {"BTC": Decimal("1.25"), "USD": Decimal("1000.00")}
    assert book.balances("dydx-0")["ETH/USD:USDC"] == Decimal("-1.5")
    assert book.balances("kr-1") == {}
    for _ in range(20):
        book.balances("cb-main")
    assert server.hits["/book"] - before == 1


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/500", ErrorKind.UNAVAILABLE),
        ("/404", ErrorKind.CONFIG),
        ("/401", ErrorKind.AUTH),
        ("/403", ErrorKind.AUTH),
        ("/html", ErrorKind.MALFORMED),
        ("/truncated", ErrorKind.MALFORMED),
        ("/nan", ErrorKind.MALFORMED),
    ],
)
def test_server_failures_are_book_errors_of_their_kind(server, http, path, kind) -> None:
    """Real error statuses and bad bodies make a BookError of the right kind, never a book."""
    error = _failure(HttpBook(http, server.base_url + path, timeout=5.0))
    assert error.kind is kind
    assert error.message.startswith(f"book {server.base_url}{path}: ")


def test_a_server_that_does_not_answer_in_time_is_a_timeout(server, http) -> None:
    """A response held past the timeout is kind timeout (the server is released afterwards)."""
    error = _failure(HttpBook(http, server.base_url + "/slow", timeout=0.2))
    assert error.kind is ErrorKind.TIMEOUT


def test_a_port_with_nothing_listening_is_unavailable(http) -> None:
    """A refused connection is kind unavailable: an unreachable book is never an empty book."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = _failure(HttpBook(http, f"http://127.0.0.1:{port}/book", timeout=2.0))
    assert error.kind is ErrorKind.UNAVAILABLE
