"""The book served over HTTP (``[book] source = "http"``): ``GET url`` returns the book JSON.

The response is the same document as the file source (DESIGN §2): the whole book, every
account. It is fetched once per cycle, not once per account: :meth:`HttpBook.balances` serves
every account from one **snapshot**. The first call fetches; calls within ``max_age`` seconds
of that fetch completing (default 5 s, well under any cycle interval) reuse it; the first call
after that fetches again. Concurrent callers wait for one fetch in flight rather than each
sending their own. :meth:`HttpBook.invalidate` forgets the snapshot, so a caller that knows a
new cycle starts can force a fresh read.

A failed fetch is remembered for ``max_age`` too, so a cycle of N accounts over an unreachable
book sends one request and waits out one timeout, not N; every account of that cycle gets the
same error. An unreachable book is never an empty book: each failure is a
:class:`~infra.book.document.BookError` whose ``kind`` says why, following the venues' mapping
(:mod:`infra.venues.http`)::

    timeout (connect, read, or the whole body not in within ``timeout``), HTTP 408  → timeout
    connection refused or reset, protocol error, HTTP 5xx                           → unavailable
    HTTP 429                                                                        → rate_limited
    HTTP 401, 403                                                                   → auth
    HTTP 404, any other 4xx, a redirect (not followed), a non-http(s) URL           → config
    a 2xx body that is not the book JSON (HTML, truncated, NaN, duplicate keys …)   → malformed

:meth:`HttpBook.put_balances` (``recon sync``) writes one account: ``PUT {url}/{account_id}``
with ``{"account_id", "as_of", "balances": {asset: "decimal string"}}``; a non-2xx answer is a
:class:`~infra.book.document.BookError` with the same kinds.

Messages name the book by its URL without credentials, query or fragment (``book
http://pm.internal:8080/balances: …``), never an amount and never a response body.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from domain.amounts import format_amount
from domain.report import ErrorKind
from infra.book.document import BookDocument, BookError, parse_book_json
from infra.venues.errors import VenueError
from infra.venues.http import check_status, send

#: Seconds a fetched book (or a failed fetch) serves later calls before the next fetch.
DEFAULT_MAX_AGE_SECONDS: Final = 5.0
_HEADERS: Final = {"Accept": "application/json"}


def public_url(url: str) -> str:
    """``url`` fit for a message: scheme, host, port and path; no userinfo, query or fragment."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class HttpBook:
    """The book JSON at ``url``, read over ``http``; satisfies the cycle's ``BookSource``.

    ``timeout`` bounds one fetch in total (connect, headers and the whole body). ``clock``
    (monotonic seconds) measures the snapshot's age; it is injectable for tests.
    """

    def __init__(
        self,
        http: httpx.Client,
        url: str,
        *,
        timeout: float,
        max_age: float = DEFAULT_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_age < 0:
            raise ValueError("max_age must not be negative")
        self._http = http
        self._url = url
        self.source = f"book {public_url(url)}"
        self._timeout = timeout
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        # (when the fetch completed, the document or the error it ended with)
        self._snapshot: tuple[float, BookDocument | BookError] | None = None

    def balances(self, account_id: str) -> dict[str, Decimal]:
        """What the book says ``account_id`` holds (empty when the book does not list it)."""
        return self.document().balances(account_id)

    def document(self) -> BookDocument:
        """The whole book from the current snapshot, fetched when there is none or it is old.

        Raises :class:`BookError` when the fetch (or the remembered one) failed.
        """
        with self._lock:
            snapshot = self._snapshot
            if snapshot is None or self._clock() - snapshot[0] >= self._max_age:
                outcome = self._fetch()
                snapshot = (self._clock(), outcome)
                self._snapshot = snapshot
        outcome = snapshot[1]
        if isinstance(outcome, BookError):
            # A fresh exception per caller: one instance raised in many frames (and threads)
            # would pile up tracebacks.
            raise BookError(outcome.message, outcome.kind)
        return outcome

    def invalidate(self) -> None:
        """Forget the snapshot: the next call fetches the book again."""
        with self._lock:
            self._snapshot = None

    def put_balances(
        self, account_id: str, balances: Mapping[str, Decimal], as_of: datetime
    ) -> None:
        """Write ``account_id``'s balances to the book: ``PUT {url}/{account_id}`` (sync, §6).

        The body is ``{"account_id", "as_of", "balances": {asset: "decimal string"}}``. A 2xx
        answer is success; anything else raises :class:`BookError` (kinds as for the GET, a
        redirect is config). The snapshot is forgotten either way.
        """
        if as_of.tzinfo is None:
            raise ValueError("as_of must be timezone-aware")
        body = {
            "account_id": account_id,
            "as_of": as_of.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "balances": {asset: format_amount(amount) for asset, amount in balances.items()},
        }
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        target = f"{self._url.rstrip('/')}/{quote(account_id, safe='')}"
        try:
            response = send(
                self._http,
                "PUT",
                target,
                venue=self.source,
                timeout=self._timeout,
                headers={**_HEADERS, "Content-Type": "application/json"},
                content=content,
            )
            if 300 <= response.status_code < 400:
                raise BookError(
                    f"{self.source}: unexpected redirect (HTTP {response.status_code}, not "
                    f"followed) writing account {account_id!r}; check the [book] url",
                    ErrorKind.CONFIG,
                )
            check_status(response, venue=self.source)
        except VenueError as error:
            raise BookError(error.message, error.kind) from None
        finally:
            self.invalidate()

    def _fetch(self) -> BookDocument | BookError:
        try:
            response = send(
                self._http,
                "GET",
                self._url,
                venue=self.source,
                timeout=self._timeout,
                headers=_HEADERS,
            )
            if 300 <= response.status_code < 400:
                return BookError(
                    f"{self.source}: unexpected redirect (HTTP {response.status_code}, not "
                    "followed); check the [book] url",
                    ErrorKind.CONFIG,
                )
            check_status(response, venue=self.source)
            return parse_book_json(response.body, self.source)
        except VenueError as error:
            return BookError(error.message, error.kind)
        except BookError as error:
            return error
