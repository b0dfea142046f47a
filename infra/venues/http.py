"""One venue HTTP request, with its failures mapped into the venue exception tree.

The mapping (DESIGN §3) every venue client shares::

    httpx.TimeoutException, or the total deadline passed while reading → VenueTimeout
    httpx.UnsupportedProtocol (a base_url that is not http/https)     → VenueConfigError
    httpx.DecodingError (a body whose Content-Encoding does not decode) → MalformedVenueResponse
    any other httpx transport error (refused, reset, protocol error)  → VenueUnavailable
    5xx                                                               → VenueUnavailable
    408                                                               → VenueTimeout
    429 (and any status in ``rate_limit_statuses``)                   → VenueRateLimited
    401, 403                                                          → VenueAuthError
    3xx (redirects are not followed) and any other 4xx                → VenueConfigError
    a 2xx body that is not exact JSON                                 → MalformedVenueResponse

Messages name the venue, the HTTP status and, at most, the venue's own error code when it is
a plain identifier (``PERMISSION_DENIED``, ``GEOBLOCKED``): a response body is never echoed,
since it may carry balances.
"""

from __future__ import annotations

import enum
import json
import math
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import httpx

from infra.venues.errors import (
    MalformedVenueResponse,
    VenueAuthError,
    VenueConfigError,
    VenueError,
    VenueRateLimited,
    VenueTimeout,
    VenueUnavailable,
)

#: A balance response is a few hundred kilobytes at most (Coinbase: 250 accounts of ~600 bytes
#: a page); anything past this is not the documented body.
MAX_BODY_BYTES: Final = 8 * 1024 * 1024

#: A venue error code worth naming in a message: an identifier, no digits (so never an amount)
#: and no spaces (so never a sentence that could embed an account detail).
_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z_.:\-]{0,63}")
#: Retry-After as a delta: a non-negative decimal number (the HTTP-date form is ignored).
_RETRY_AFTER = re.compile(r"\d{1,12}(\.\d{1,6})?")


class RetryAfterUnit(enum.Enum):
    """The unit a venue's ``Retry-After`` header counts in; the value is seconds per unit."""

    SECONDS = 1.0
    MILLISECONDS = 0.001  # dYdX indexer: msBeforeNext


@dataclass(frozen=True, slots=True)
class VenueResponse:
    """A completed response: status, headers, and the whole body."""

    status_code: int
    headers: httpx.Headers
    body: bytes


def send(
    http: httpx.Client,
    method: str,
    url: str,
    *,
    venue: str,
    timeout: float,
    params: Mapping[str, str | int] | None = None,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    monotonic: Callable[[], float] = time.monotonic,
) -> VenueResponse:
    """Perform one request and read its whole body within ``timeout`` seconds in total.

    httpx's timeout bounds each phase (connect, each read); the total deadline is also checked
    while the body streams in, so a venue that drips bytes cannot hold a worker much past
    ``timeout``. Any status is returned: :func:`check_status` judges it.
    """
    deadline = monotonic() + timeout
    try:
        with http.stream(
            method,
            url,
            params=params,
            headers=headers,
            content=content,
            timeout=timeout,
            follow_redirects=False,
        ) as response:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise MalformedVenueResponse(
                        f"{venue}: malformed response: body exceeds {MAX_BODY_BYTES} bytes"
                    )
                chunks.append(chunk)
                if monotonic() > deadline:
                    raise VenueTimeout(f"{venue}: response not complete within {timeout:g} s")
            return VenueResponse(response.status_code, response.headers, b"".join(chunks))
    except httpx.TimeoutException as exc:
        raise VenueTimeout(f"{venue}: request timed out ({type(exc).__name__})") from exc
    except httpx.UnsupportedProtocol as exc:
        raise VenueConfigError(f"{venue}: base_url scheme must be http or https") from exc
    except httpx.DecodingError as exc:
        raise MalformedVenueResponse(
            f"{venue}: malformed response: body does not decode ({type(exc).__name__})"
        ) from exc
    except httpx.TransportError as exc:
        raise VenueUnavailable(f"{venue}: connection failed ({type(exc).__name__})") from exc


def check_status(
    response: VenueResponse,
    *,
    venue: str,
    retry_after_unit: RetryAfterUnit = RetryAfterUnit.SECONDS,
    rate_limit_statuses: Collection[int] = (429,),
) -> None:
    """Raise the venue error for a non-2xx ``response``; return for a 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return
    described = f"HTTP {status}"
    code = venue_error_code(response.body)
    if code is not None:
        described += f", {code}"
    error: VenueError
    if status in rate_limit_statuses:
        error = VenueRateLimited(
            f"{venue}: rate limited ({described})",
            retry_after=parse_retry_after(response.headers.get("Retry-After"), retry_after_unit),
        )
    elif status >= 500:
        error = VenueUnavailable(f"{venue}: venue unavailable ({described})")
    elif status == 408:
        error = VenueTimeout(f"{venue}: venue timed out the request ({described})")
    elif status in (401, 403):
        error = VenueAuthError(f"{venue}: credentials refused ({described})")
    elif 300 <= status < 400:
        error = VenueConfigError(f"{venue}: unexpected redirect ({described}); check base_url")
    else:
        error = VenueConfigError(f"{venue}: request refused ({described})")
    raise error


def decode_json(response: VenueResponse, *, venue: str) -> Any:
    """The body as exact JSON: numbers as Decimal; NaN/Infinity and duplicate keys refused."""
    return parse_json(response.body, venue=venue, status=response.status_code)


def request_json(
    http: httpx.Client,
    method: str,
    url: str,
    *,
    venue: str,
    timeout: float,
    params: Mapping[str, str | int] | None = None,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    retry_after_unit: RetryAfterUnit = RetryAfterUnit.SECONDS,
    rate_limit_statuses: Collection[int] = (429,),
    monotonic: Callable[[], float] = time.monotonic,
) -> Any:
    """:func:`send`, :func:`check_status` and :func:`decode_json` in one call."""
    response = send(
        http,
        method,
        url,
        venue=venue,
        timeout=timeout,
        params=params,
        headers=headers,
        content=content,
        monotonic=monotonic,
    )
    check_status(
        response,
        venue=venue,
        retry_after_unit=retry_after_unit,
        rate_limit_statuses=rate_limit_statuses,
    )
    return decode_json(response, venue=venue)


def parse_json(body: bytes, *, venue: str, status: int) -> Any:
    """Exact JSON (see :func:`decode_json`); anything else is MalformedVenueResponse."""
    try:
        return json.loads(
            body,
            parse_float=Decimal,
            parse_int=Decimal,
            parse_constant=_refuse_constant,
            object_pairs_hook=_unique_keys,
        )
    except _NonStandardJson as exc:
        raise MalformedVenueResponse(f"{venue}: malformed response (HTTP {status}): {exc}") from exc
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors; their text quotes the body.
        raise MalformedVenueResponse(
            f"{venue}: malformed response (HTTP {status}): body is not valid JSON"
        ) from exc


def parse_retry_after(value: str | None, unit: RetryAfterUnit) -> float | None:
    """A ``Retry-After`` delta in seconds; None when absent, not a number, or an HTTP-date."""
    if value is None:
        return None
    text = value.strip()
    if not _RETRY_AFTER.fullmatch(text):
        return None
    seconds = float(text) * unit.value
    return seconds if math.isfinite(seconds) else None


def venue_error_code(body: bytes) -> str | None:
    """The venue's error code from an error body, when it is a plain identifier.

    Coinbase ``{"error": "PERMISSION_DENIED", ...}``, dYdX ``{"errors": [{"code": ...}]}``,
    Binance ``{"code": -2015, ...}``. Plain text, HTML or free-form messages give None.
    """
    try:
        payload = json.loads(body, parse_float=Decimal, parse_int=Decimal)
    except (ValueError, RecursionError):
        return None
    if not isinstance(payload, dict):
        return None
    candidates: list[Any] = [payload.get("error"), payload.get("code")]
    errors = payload.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        candidates.append(errors[0].get("code"))
    for candidate in candidates:
        if isinstance(candidate, str) and _ERROR_CODE.fullmatch(candidate):
            return candidate
        if (
            isinstance(candidate, Decimal)
            and candidate == candidate.to_integral_value()
            and candidate.copy_abs() < 100_000  # abs() would overflow on 1e999999999
        ):
            return f"code {int(candidate)}"
    return None


class _NonStandardJson(ValueError):
    """A JSON extension that the venues' documented bodies never use."""


def _refuse_constant(name: str) -> Any:
    raise _NonStandardJson(f"non-finite number constant {name}")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            # Name the key only when it is an identifier (a field name, never a value).
            named = f" {key!r}" if _ERROR_CODE.fullmatch(key) else ""
            raise _NonStandardJson(f"duplicate key{named} in an object")
        obj[key] = value
    return obj
