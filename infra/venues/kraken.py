"""Kraken Spot: one account's totals from ``POST /0/private/Balance`` (DESIGN §3).

Auth: headers ``API-Key`` and ``API-Sign``, where ``API-Sign`` is
``base64(HMAC-SHA512(base64decode(secret), uri_path + SHA256(nonce + postdata)))`` (:func:`sign`)
and the form-encoded body ``nonce=<n>`` carries a nonce that must keep increasing per API key.
Nonces come from :data:`PROCESS_NONCES`: epoch milliseconds (the unit Kraken's docs and ccxt
use, so a key shared with such tools keeps working), bumped by one whenever the clock has not
moved past the last nonce of that key, under a lock. Across processes using one key, the
account lock serialises the calls; Kraken's per-key "nonce window" setting absorbs the rest.

Kraken reports errors as HTTP 200 with a non-empty ``error`` array (a non-200 means the request
did not reach the API properly, and goes through :func:`~infra.venues.http.check_status`).
``W…`` entries are warnings and are ignored. The mapping (:func:`error_for`)::

    EAPI:Invalid key, EAPI:Invalid signature, EAPI:Invalid nonce,
    EGeneral:Permission denied, EGeneral:Temporary lockout        → VenueAuthError
    EAPI:Rate limit exceeded, EGeneral:Too many requests,
    EService:Throttled:<unix ts> (retry_after = ts − now)           → VenueRateLimited
    any other EService:*, EGeneral:Internal error                   → VenueUnavailable
    any other E<Category>:<message>                                 → VenueConfigError
    an entry that is not an E…/W… string                            → MalformedVenueResponse

``EGeneral:Temporary lockout`` counts as auth: Kraken imposes it after repeated invalid keys, so
retrying only extends it. When one body holds several errors, the permanent kind wins (auth,
then config), then rate limited, then unavailable: a retry cannot cure a permanent error.
Messages carry only the error codes, with any number in them (the Throttled timestamp) dropped.

``result`` maps asset id → total as a decimal string (JSON numbers are accepted, parsed
exactly). Ids are mapped to canonical codes by :mod:`infra.venues.kraken_assets` (``XXBT`` →
``BTC``, suffixed codes kept separate) and entries that map to one code are summed. Zero
entries are kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, Final

import httpx

from domain.amounts import add
from infra.venues.errors import (
    MalformedVenueResponse,
    VenueAuthError,
    VenueConfigError,
    VenueError,
    VenueRateLimited,
    VenueUnavailable,
)
from infra.venues.http import check_status, decode_json, send
from infra.venues.kraken_assets import canonical_asset
from infra.venues.pacing import LimitModel, Pacer, RateLimit
from infra.venues.parsing import require_amount, require_list, require_member, require_object

VENUE: Final = "kraken"
BALANCE_PATH: Final = "/0/private/Balance"

#: Error codes (``Category:Message``, spaces around ``:`` removed) per exception class.
AUTH_ERRORS: Final = frozenset(
    {
        "EAPI:Invalid key",
        "EAPI:Invalid signature",
        "EAPI:Invalid nonce",
        "EGeneral:Permission denied",
        # Repeated invalid keys trigger it (Kraken docs): an auth problem, not an outage.
        "EGeneral:Temporary lockout",
    }
)
RATE_LIMIT_ERRORS: Final = frozenset(
    {"EAPI:Rate limit exceeded", "EGeneral:Too many requests", "EService:Throttled"}
)
UNAVAILABLE_ERRORS: Final = frozenset({"EGeneral:Internal error"})
#: Every other ``EService:*`` error is the service being down or busy.
SERVICE_CATEGORY: Final = "EService"

#: A nonce is an unsigned 64-bit integer.
MAX_NONCE: Final = 2**64 - 1
#: How many error codes a message names at most.
_MAX_CODES_SHOWN: Final = 3

#: An error entry: ``E``/``W``, a category, then ``:``-separated parts.
_ERROR_ENTRY = re.compile(r"[EW][A-Za-z]{1,30}\s*:.*", re.DOTALL)
#: A category or message worth repeating in an exception: letters and single spaces only (no
#: digits, so never an amount), short.
_SAFE_PART = re.compile(r"[A-Za-z]+(?: [A-Za-z]+){0,7}")
_TIMESTAMP = re.compile(r"\d{1,12}(?:\.\d{1,9})?")
#: A result key worth naming in a message: an asset id with a letter in it (never an amount).
_ASSET_LABEL = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9._\-]{1,40}")
_API_KEY = re.compile(r"[!-~]{1,512}")


#: Kraken's call counter per API key at the Starter tier (the most restrictive): at most 15,
#: decaying by 0.33 a second; a Balance call adds 1.
PUBLISHED_LIMIT: Final = RateLimit.in_requests(
    LimitModel.BUCKET, per_second=Decimal("0.33"), burst=15
)
LIMIT_SCOPE: Final = "key"


class KrakenKeyError(ValueError):
    """The configured API key or secret cannot sign requests (never shows either)."""


# --------------------------------------------------------------------------- signing


def decode_secret(secret_b64: str) -> bytes:
    """The HMAC key: the API secret, base64-decoded (surrounding whitespace ignored)."""
    try:
        secret = base64.b64decode(secret_b64.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KrakenKeyError("Kraken API secret is not valid base64") from exc
    if not secret:
        raise KrakenKeyError("Kraken API secret is empty")
    return secret


def sign(path: str, nonce: int, postdata: str, secret_b64: str) -> str:
    """Kraken's ``API-Sign``: base64(HMAC-SHA512(secret, path + SHA256(nonce + postdata)))."""
    return _sign(path, nonce, postdata.encode("utf-8"), decode_secret(secret_b64))


def _sign(path: str, nonce: int, postdata: bytes, secret: bytes) -> str:
    digest = hashlib.sha256(str(nonce).encode("ascii") + postdata).digest()
    mac = hmac.new(secret, path.encode("utf-8") + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode("ascii")


# --------------------------------------------------------------------------- nonces


def _epoch_ms() -> int:
    return time.time_ns() // 1_000_000


class NonceSource:
    """Strictly increasing nonces per API key, safe to share between threads.

    Each nonce is the clock in epoch milliseconds, or the key's previous nonce + 1 when the
    clock has not moved past it (fast calls, a clock stepped back).
    """

    def __init__(self, clock_ms: Callable[[], int] = _epoch_ms) -> None:
        self._clock_ms = clock_ms
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}

    def next(self, api_key: str) -> int:
        """The next nonce for ``api_key``: greater than every one handed out before for it."""
        with self._lock:
            nonce = max(self._clock_ms(), self._last.get(api_key, 0) + 1)
            if nonce > MAX_NONCE:
                raise OverflowError("Kraken nonce exceeds 64 bits")
            self._last[api_key] = nonce
            return nonce

    def after_fork(self) -> None:
        """A fresh lock in a forked child (the parent's may have been held by another thread)."""
        self._lock = threading.Lock()


#: The process-wide nonce source every :class:`KrakenClient` uses unless given ``nonce``.
PROCESS_NONCES: Final = NonceSource()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=PROCESS_NONCES.after_fork)


# --------------------------------------------------------------------------- client


class KrakenClient:
    """Reads one Kraken account's total balance per canonical asset code."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        base_url: str = "https://api.kraken.com",
        api_key: str,
        api_secret: str,
        timeout: float,
        nonce: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.time,
        pacer: Pacer | None = None,
    ) -> None:
        key = api_key.strip()
        if not _API_KEY.fullmatch(key):
            raise KrakenKeyError("Kraken API key must be non-empty printable text without spaces")
        self._http = http
        self._url = base_url.rstrip("/") + BALANCE_PATH
        self._api_key = key
        self._secret = decode_secret(api_secret)
        self._timeout = timeout
        self._nonce = nonce if nonce is not None else (lambda: PROCESS_NONCES.next(key))
        self._clock = clock
        self._pacer = pacer

    def fetch_balances(self) -> dict[str, Decimal]:
        """Total per canonical asset code (entries that map to one code summed)."""
        if self._pacer is not None:
            self._pacer.wait()  # before the nonce: a nonce must be fresh when it is sent
        nonce = self._nonce()
        if type(nonce) is not int or not 0 < nonce <= MAX_NONCE:
            raise ValueError("a Kraken nonce must be a positive 64-bit integer")
        postdata = f"nonce={nonce}".encode("ascii")
        response = send(
            self._http,
            "POST",
            self._url,
            venue=VENUE,
            timeout=self._timeout,
            headers={
                "API-Key": self._api_key,
                "API-Sign": _sign(BALANCE_PATH, nonce, postdata, self._secret),
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            content=postdata,
        )
        check_status(response, venue=VENUE)
        payload = require_object(decode_json(response, venue=VENUE), venue=VENUE, field="body")
        raise_for_errors(payload, now=self._clock())
        result = require_object(
            require_member(payload, "result", venue=VENUE), venue=VENUE, field="result"
        )
        return balances_from_result(result)


def raise_for_errors(payload: Mapping[str, Any], *, now: float) -> None:
    """Raise the venue error for a non-empty ``error`` array (warnings ignored)."""
    entries = require_list(
        require_member(payload, "error", venue=VENUE), venue=VENUE, field="error"
    )
    codes: list[str] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, str) or not _ERROR_ENTRY.fullmatch(entry):
            raise MalformedVenueResponse(
                f"{VENUE}: malformed response: error[{index}] is not a Kraken error code"
            )
        if entry.startswith("E"):
            codes.append(entry)
    if codes:
        raise error_for(codes, now=now)


def error_for(codes: Iterable[str], *, now: float) -> VenueError:
    """The exception for Kraken error strings ``codes`` (``E…``), per the module's table."""
    parsed = [_split(code) for code in codes]
    shown = ", ".join(_describe(parts) for parts in parsed[:_MAX_CODES_SHOWN])
    if len(parsed) > _MAX_CODES_SHOWN:
        shown += f" and {len(parsed) - _MAX_CODES_SHOWN} more"
    names = [_name(parts) for parts in parsed]
    if any(name in AUTH_ERRORS for name in names):
        return VenueAuthError(f"{VENUE}: credentials refused ({shown})")
    if any(not _transient(name) for name in names):
        return VenueConfigError(f"{VENUE}: request refused ({shown})")
    if any(name in RATE_LIMIT_ERRORS for name in names):
        waits = [w for parts in parsed if (w := _throttled_wait(parts, now)) is not None]
        return VenueRateLimited(
            f"{VENUE}: rate limited ({shown})", retry_after=max(waits) if waits else None
        )
    return VenueUnavailable(f"{VENUE}: venue unavailable ({shown})")


def balances_from_result(result: Mapping[str, Any]) -> dict[str, Decimal]:
    """Canonical code → total, from a ``Balance`` ``result`` object."""
    totals: dict[str, Decimal] = {}
    for code, value in result.items():
        if not _ASSET_LABEL.fullmatch(code):
            raise MalformedVenueResponse(
                f"{VENUE}: malformed response: result has a key that is not an asset id"
            )
        # Balance holds spot totals "net of pending withdrawals": Kraken spot balances cannot
        # go below zero (margin debt is not in this call), so a negative figure is not the
        # documented body.
        amount = require_amount(value, venue=VENUE, field=f"result[{code}]", unsigned=True)
        canonical = canonical_asset(code)
        totals[canonical] = add(totals.get(canonical, Decimal(0)), amount)
    return totals


def _split(code: str) -> list[str]:
    """``"EService: Throttled: 1616492376"`` → ``["EService", "Throttled", "1616492376"]``."""
    return [part.strip() for part in code.split(":")]


def _name(parts: list[str]) -> str:
    """The ``Category:Message`` that the tables use."""
    return ":".join(parts[:2])


def _transient(name: str) -> bool:
    category = name.split(":", 1)[0]
    return name in RATE_LIMIT_ERRORS or name in UNAVAILABLE_ERRORS or category == SERVICE_CATEGORY


def _describe(parts: list[str]) -> str:
    """``Category:Message`` for a message, keeping only parts made of letters and spaces."""
    category = parts[0] if _SAFE_PART.fullmatch(parts[0]) else "E?"
    if len(parts) > 1 and _SAFE_PART.fullmatch(parts[1]):
        return f"{category}:{parts[1]}"
    return category


def _throttled_wait(parts: list[str], now: float) -> float | None:
    """Seconds until the ``EService:Throttled:<unix ts>`` timestamp; None if not parseable."""
    if _name(parts) != "EService:Throttled" or len(parts) < 3:
        return None
    if not _TIMESTAMP.fullmatch(parts[2]):
        return None
    return max(0.0, float(parts[2]) - now)
