"""dYdX v4 indexer: one subaccount's balances from ``GET /v4/addresses/{a}/subaccountNumber/{n}``.

Public, no auth (DESIGN §3). Asset positions are unsigned sizes with a ``side``: LONG is
``+size``, SHORT ``−size`` (USDC already includes unsettled funding). Open perpetual positions
are reported under ccxt's unified symbol ``BASE/USD:USDC`` with the indexer's signed ``size``.
The body is ``{"subaccount": {...}}`` in the indexer's code and tests, unwrapped in its
generated docs: both are read. A 404 means the indexer knows no such subaccount: a
configuration error, not an outage. ``Retry-After`` counts milliseconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import httpx

from domain.amounts import add
from infra.venues.errors import MalformedVenueResponse, VenueConfigError
from infra.venues.http import RetryAfterUnit, check_status, decode_json, send
from infra.venues.pacing import LimitModel, Pacer, RateLimit
from infra.venues.parsing import (
    require_amount,
    require_member,
    require_object,
    require_str,
)

VENUE: Final = "dydx"
#: The settlement asset of every dYdX v4 perpetual.
SETTLE: Final = "USDC"
#: The indexer's own validation: subaccountNumber < 128001, addresses alphanumeric ≤ 90 chars.
MAX_SUBACCOUNT: Final = 128_000
_ADDRESS = re.compile(r"[A-Za-z0-9]{1,90}")
#: A map key worth naming in a message: a ticker with a letter in it (so never an amount).
_LABEL = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9,._\-]{1,40}")
_MARKET = re.compile(r"(?P<base>[^\s/:]+)-(?P<quote>[A-Za-z0-9]+)")


#: The indexer's default limit: 100 GETs per 10 s per client IP (comlink's rate-limit config).
PUBLISHED_LIMIT: Final = RateLimit.in_requests(LimitModel.WINDOW, per_second=10, burst=100)
LIMIT_SCOPE: Final = "ip"


class DydxClient:
    """Reads one dYdX v4 subaccount's signed asset and open perpetual positions."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        base_url: str = "https://indexer.dydx.trade",
        address: str,
        subaccount: int,
        timeout: float,
        pacer: Pacer | None = None,
    ) -> None:
        if not _ADDRESS.fullmatch(address):
            raise ValueError("dYdX address must be 1 to 90 letters and digits (dydx1…)")
        if isinstance(subaccount, bool) or not 0 <= subaccount <= MAX_SUBACCOUNT:
            raise ValueError(f"dYdX subaccount must be an integer from 0 to {MAX_SUBACCOUNT}")
        self._http = http
        self._url = f"{base_url.rstrip('/')}/v4/addresses/{address}/subaccountNumber/{subaccount}"
        self._address = address
        self._subaccount = subaccount
        self._timeout = timeout
        self._pacer = pacer

    def fetch_balances(self) -> dict[str, Decimal]:
        """Signed asset positions by symbol, plus open perpetuals as ``BASE/USD:USDC``."""
        if self._pacer is not None:
            self._pacer.wait()
        response = send(
            self._http,
            "GET",
            self._url,
            venue=VENUE,
            timeout=self._timeout,
            headers={"Accept": "application/json"},
        )
        if response.status_code == 404:
            raise VenueConfigError(
                f"{VENUE}: unknown subaccount (HTTP 404): the indexer has no subaccount "
                "for the configured address and subaccount number"
            )
        check_status(response, venue=VENUE, retry_after_unit=RetryAfterUnit.MILLISECONDS)
        body = require_object(decode_json(response, venue=VENUE), venue=VENUE, field="body")
        subaccount = self._unwrap(body)
        balances: dict[str, Decimal] = {}
        for asset, amount in _asset_positions(subaccount):
            balances[asset] = add(balances.get(asset, Decimal(0)), amount)
        for symbol, size in _open_perpetuals(subaccount):
            balances[symbol] = add(balances.get(symbol, Decimal(0)), size)
        return balances

    def _unwrap(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """The SubaccountResponseObject, wrapped or not; checked to be the one asked for."""
        if "subaccount" in body:
            subaccount = require_object(body["subaccount"], venue=VENUE, field="subaccount")
        elif "assetPositions" in body:
            subaccount = body
        else:
            raise MalformedVenueResponse(f"{VENUE}: malformed response: subaccount is missing")
        if "address" in subaccount and subaccount["address"] != self._address:
            raise MalformedVenueResponse(
                f"{VENUE}: malformed response: subaccount.address is not the one requested"
            )
        number = subaccount.get("subaccountNumber")
        if number is not None and number != Decimal(self._subaccount):
            raise MalformedVenueResponse(
                f"{VENUE}: malformed response: subaccount.subaccountNumber is not the one requested"
            )
        return subaccount


def _asset_positions(subaccount: Mapping[str, Any]) -> list[tuple[str, Decimal]]:
    """``(symbol, signed size)`` of every asset position."""
    positions = require_object(
        require_member(subaccount, "assetPositions", venue=VENUE),
        venue=VENUE,
        field="assetPositions",
    )
    entries: list[tuple[str, Decimal]] = []
    for key, position in positions.items():
        field = f"assetPositions[{_label(key)}]"
        obj = require_object(position, venue=VENUE, field=field)
        symbol = require_str(
            require_member(obj, "symbol", venue=VENUE, field=f"{field}.symbol"),
            venue=VENUE,
            field=f"{field}.symbol",
        )
        size = require_amount(
            require_member(obj, "size", venue=VENUE, field=f"{field}.size"),
            venue=VENUE,
            field=f"{field}.size",
            unsigned=True,
        )
        entries.append((symbol, size if _side(obj, field) == "LONG" else -size))
    return entries


def _open_perpetuals(subaccount: Mapping[str, Any]) -> list[tuple[str, Decimal]]:
    """``(BASE/USD:USDC, signed size)`` of every OPEN perpetual position."""
    positions = require_object(
        require_member(subaccount, "openPerpetualPositions", venue=VENUE),
        venue=VENUE,
        field="openPerpetualPositions",
    )
    entries: list[tuple[str, Decimal]] = []
    for key, position in positions.items():
        field = f"openPerpetualPositions[{_label(key)}]"
        obj = require_object(position, venue=VENUE, field=field)
        status = require_str(
            require_member(obj, "status", venue=VENUE, field=f"{field}.status"),
            venue=VENUE,
            field=f"{field}.status",
        )
        if status != "OPEN":
            continue
        market = require_str(
            require_member(obj, "market", venue=VENUE, field=f"{field}.market"),
            venue=VENUE,
            field=f"{field}.market",
        )
        match = _MARKET.fullmatch(market)
        if match is None:
            raise MalformedVenueResponse(
                f"{VENUE}: malformed response: {field}.market is not BASE-QUOTE"
            )
        size = require_amount(
            require_member(obj, "size", venue=VENUE, field=f"{field}.size"),
            venue=VENUE,
            field=f"{field}.size",
            unsigned=False,
        )
        # The indexer signs perp sizes (SHORT is negative). A SHORT with a positive size would
        # mean that convention changed; reading it as given would flip the position.
        side = _side(obj, field)
        if (side == "SHORT" and size > 0) or (side == "LONG" and size < 0):
            raise MalformedVenueResponse(
                f"{VENUE}: malformed response: {field}.size sign contradicts {field}.side"
            )
        entries.append((f"{match['base']}/{match['quote']}:{SETTLE}", size))
    return entries


def _side(position: Mapping[str, Any], field: str) -> str:
    side = require_member(position, "side", venue=VENUE, field=f"{field}.side")
    if side not in ("LONG", "SHORT"):
        raise MalformedVenueResponse(f"{VENUE}: malformed response: {field}.side is not LONG/SHORT")
    return str(side)


def _label(key: str) -> str:
    """A map key for a message: a market or symbol name, or ``?`` if it looks like anything else."""
    return key if _LABEL.fullmatch(key) else "?"
