"""Coinbase Advanced Trade v3: balances from ``GET /api/v3/brokerage/accounts`` (DESIGN §3).

Every page is fetched (``limit``/``cursor`` until ``has_next`` is false or the cursor is
``""``), each request with a fresh ES256 JWT (CDP API key: ``kid``/``sub`` = key name,
``iss`` = ``cdp``, two-minute expiry, ``uri`` = ``"GET host/path"``). The total per currency is
``available_balance.value + hold.value``, summed over every account of every type (vaults
included): the desk owns what sits in a vault.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from domain.amounts import add
from infra.venues.errors import MalformedVenueResponse
from infra.venues.http import request_json
from infra.venues.pacing import LimitModel, Pacer, RateLimit
from infra.venues.parsing import (
    require_amount,
    require_bool,
    require_list,
    require_member,
    require_object,
    require_str,
)

VENUE: Final = "coinbase"
ACCOUNTS_PATH: Final = "/api/v3/brokerage/accounts"
#: The documented maximum page size.
MAX_PAGE_LIMIT: Final = 250
#: "Your JWT expires after 2 minutes" (Coinbase docs).
JWT_LIFETIME_SECONDS: Final = 120
#: 1000 pages of 250 accounts is far past any real portfolio: a cursor that never ends is a
#: venue bug, not a reason to loop forever.
MAX_PAGES: Final = 1000


#: The published limit of private endpoints: 30 requests a second per API key (the reference
#: file: a ccxt comment citing the docs), as a window of one second.
PUBLISHED_LIMIT: Final = RateLimit.in_requests(LimitModel.WINDOW, per_second=30, burst=30)
LIMIT_SCOPE: Final = "key"


class CoinbaseKeyError(ValueError):
    """The configured CDP key name or private key cannot sign requests (never shows the key)."""


class CoinbaseClient:
    """Reads one Coinbase Advanced Trade portfolio's total balance per currency."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        base_url: str = "https://api.coinbase.com",
        key_name: str,
        private_key_pem: str,
        timeout: float,
        page_limit: int = MAX_PAGE_LIMIT,
        clock: Callable[[], float] = time.time,
        pacer: Pacer | None = None,
    ) -> None:
        if not 1 <= page_limit <= MAX_PAGE_LIMIT:
            raise ValueError(f"page_limit must be between 1 and {MAX_PAGE_LIMIT}")
        if not key_name.strip():
            raise CoinbaseKeyError("Coinbase API key name is empty")
        self._http = http
        self._url = base_url.rstrip("/") + ACCOUNTS_PATH
        self._uri_claim = f"GET {_jwt_host(base_url)}{httpx.URL(self._url).path}"
        self._key_name = key_name
        self._private_key = load_private_key(private_key_pem)
        self._timeout = timeout
        self._page_limit = page_limit
        self._clock = clock
        self._pacer = pacer

    def fetch_balances(self) -> dict[str, Decimal]:
        """Total per currency over every page of accounts."""
        totals: dict[str, Decimal] = {}
        seen_cursors: set[str] = set()
        cursor = ""
        for page in range(MAX_PAGES):
            params: dict[str, str | int] = {"limit": self._page_limit}
            if cursor:
                params["cursor"] = cursor
            if self._pacer is not None:
                self._pacer.wait()  # before the token: its lifetime starts when it is sent
            body = request_json(
                self._http,
                "GET",
                self._url,
                venue=VENUE,
                timeout=self._timeout,
                params=params,
                headers={
                    "Authorization": f"Bearer {self._token()}",
                    "Accept": "application/json",
                },
            )
            payload = require_object(body, venue=VENUE, field=f"page {page + 1}")
            accounts = require_list(
                require_member(payload, "accounts", venue=VENUE), venue=VENUE, field="accounts"
            )
            for index, account in enumerate(accounts):
                currency, total = _account_total(account, field=f"accounts[{index}]")
                totals[currency] = add(totals.get(currency, Decimal(0)), total)
            has_next = require_bool(
                require_member(payload, "has_next", venue=VENUE), venue=VENUE, field="has_next"
            )
            if not has_next:
                return totals
            cursor = require_str(
                require_member(payload, "cursor", venue=VENUE),
                venue=VENUE,
                field="cursor",
                non_empty=False,
            )
            if cursor == "":
                return totals
            if not _encodable(cursor):
                # A lone surrogate (a "\ud800" escape in the JSON) cannot go into the next URL.
                raise MalformedVenueResponse(f"{VENUE}: malformed response: cursor is not text")
            if cursor in seen_cursors:
                raise MalformedVenueResponse(
                    f"{VENUE}: malformed response: cursor repeats on page {page + 1}"
                )
            seen_cursors.add(cursor)
        raise MalformedVenueResponse(f"{VENUE}: malformed response: more than {MAX_PAGES} pages")

    def _token(self) -> str:
        """A fresh ES256 JWT for one request to the accounts endpoint."""
        now = int(self._clock())
        claims = {
            "sub": self._key_name,
            "iss": "cdp",
            "nbf": now,
            "exp": now + JWT_LIFETIME_SECONDS,
            "uri": self._uri_claim,
        }
        headers = {"kid": self._key_name, "nonce": secrets.token_hex()}
        return jwt.encode(claims, self._private_key, algorithm="ES256", headers=headers)


def load_private_key(private_key_pem: str) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key of a CDP API key, from its PEM text.

    A PEM copied out of Coinbase's key JSON often still carries ``\\n`` escapes instead of line
    breaks; they are turned back into line breaks.
    """
    text = private_key_pem.strip()
    if "\\n" in text and "\n" not in text:
        text = text.replace("\\n", "\n")
    try:
        key = serialization.load_pem_private_key(text.encode("utf-8"), password=None)
    except (ValueError, TypeError) as exc:
        # cryptography's message does not quote the key, but say nothing more than needed.
        raise CoinbaseKeyError(
            "Coinbase private key is not an unencrypted PEM private key"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise CoinbaseKeyError("Coinbase private key must be an EC P-256 (ES256) key")
    return key


def _jwt_host(base_url: str) -> str:
    """``host[:port]`` of ``base_url``, as the JWT ``uri`` claim names it (no scheme)."""
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        raise ValueError("Coinbase base_url must be http(s)://host[:port]") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("Coinbase base_url must be http(s)://host[:port]")
    host = f"[{url.host}]" if ":" in url.host else url.host
    return host if url.port is None else f"{host}:{url.port}"


def _encodable(text: str) -> bool:
    """Whether ``text`` is valid Unicode (JSON escapes can decode to lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _account_total(account: Any, *, field: str) -> tuple[str, Decimal]:
    """``(currency, available + hold)`` of one Account object."""
    obj = require_object(account, venue=VENUE, field=field)
    currency = require_str(
        require_member(obj, "currency", venue=VENUE, field=f"{field}.currency"),
        venue=VENUE,
        field=f"{field}.currency",
    )
    available = _money(obj, "available_balance", currency, field=field)
    hold = _money(obj, "hold", currency, field=field)
    return currency, add(available, hold)


def _money(account: Mapping[str, Any], key: str, currency: str, *, field: str) -> Decimal:
    """The unsigned ``value`` of a ``{value, currency}`` money object of ``account``."""
    where = f"{field}.{key}"
    money = require_object(
        require_member(account, key, venue=VENUE, field=where), venue=VENUE, field=where
    )
    if "currency" in money and money["currency"] != currency:
        raise MalformedVenueResponse(
            f"{VENUE}: malformed response: {where}.currency differs from {field}.currency"
        )
    return require_amount(
        require_member(money, "value", venue=VENUE, field=f"{where}.value"),
        venue=VENUE,
        field=f"{where}.value",
        unsigned=True,
    )
