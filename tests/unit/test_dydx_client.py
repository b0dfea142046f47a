"""dYdX v4 indexer client against MockTransport: signs, perps, wrappers and failures."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from infra.venues.dydx import DydxClient
from infra.venues.errors import (
    MalformedVenueResponse,
    VenueAuthError,
    VenueConfigError,
    VenueError,
    VenueRateLimited,
    VenueTimeout,
    VenueUnavailable,
)

ADDRESS = "dydx1n88uc38xhjgxzw9nwre4ep2c8ga4fjxc565lnf"
Handler = Callable[[httpx.Request], httpx.Response]


def perp(market: str, side: str, size: str, status: str = "OPEN") -> dict[str, Any]:
    return {
        "market": market,
        "status": status,
        "side": side,
        "size": size,
        "maxSize": size,
        "entryPrice": "3500",
        "exitPrice": None,
        "realizedPnl": "12.4",
        "unrealizedPnl": "150",
        "createdAt": "2025-10-22T08:34:05.883Z",
        "createdAtHeight": "52228825",
        "closedAt": None,
        "sumOpen": "2",
        "sumClose": "0.5",
        "netFunding": "-3.21",
        "subaccountNumber": 0,
    }


def asset(symbol: str, side: str, size: Any) -> dict[str, Any]:
    return {"symbol": symbol, "side": side, "size": size, "assetId": "0", "subaccountNumber": 0}


SUBACCOUNT: dict[str, Any] = {
    "address": ADDRESS,
    "subaccountNumber": 0,
    "equity": "10452.318",
    "freeCollateral": "9120.5",
    "openPerpetualPositions": {"ETH-USD": perp("ETH-USD", "SHORT", "-1.5")},
    "assetPositions": {"USDC": asset("USDC", "LONG", "15552.318")},
    "marginEnabled": True,
    "updatedAtHeight": "52228833",
    "latestProcessedBlockHeight": "52246761",
}


def subaccount(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(SUBACCOUNT)
    body.update(changes)
    return body


def wrapped(**changes: Any) -> bytes:
    return json.dumps({"subaccount": subaccount(**changes)}).encode()


class Indexer:
    """A fake indexer: one canned response, every request recorded."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.status, self.body, self.headers = status, body, headers or {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, content=self.body, headers=self.headers)


def fetch(handler: Handler, **kwargs: Any) -> dict[str, Decimal]:
    options: dict[str, Any] = {"address": ADDRESS, "subaccount": 0, "timeout": 10, **kwargs}
    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        return DydxClient(http, **options).fetch_balances()


def test_wrapped_body_gives_signed_assets_and_perps() -> None:
    """The real {"subaccount": …} body: USDC as given, the ETH short as a negative perp."""
    indexer = Indexer(200, wrapped())
    assert fetch(indexer) == {"USDC": Decimal("15552.318"), "ETH/USD:USDC": Decimal("-1.5")}
    (request,) = indexer.requests
    assert (
        str(request.url) == f"https://indexer.dydx.trade/v4/addresses/{ADDRESS}/subaccountNumber/0"
    )
    assert "Authorization" not in request.headers


def test_unwrapped_body_as_in_the_docs_is_read_too() -> None:
    """The generated docs' unwrapped SubaccountResponseObject gives the same balances."""
    body = json.dumps(subaccount()).encode()
    assert fetch(Indexer(200, body)) == {
        "USDC": Decimal("15552.318"),
        "ETH/USD:USDC": Decimal("-1.5"),
    }


def test_base_url_and_subaccount_number_build_the_path() -> None:
    """base_url is scheme://host[:port] (a trailing slash tolerated); /v4/… is appended."""
    indexer = Indexer(200, wrapped(subaccountNumber=7))
    fetch(indexer, base_url="http://127.0.0.1:3002/", subaccount=7)
    assert (
        str(indexer.requests[0].url)
        == f"http://127.0.0.1:3002/v4/addresses/{ADDRESS}/subaccountNumber/7"
    )


def test_short_asset_position_is_negative() -> None:
    """A SHORT asset position (USDC below zero after funding) is −size."""
    body = wrapped(
        assetPositions={"USDC": asset("USDC", "SHORT", "12.5")}, openPerpetualPositions={}
    )
    assert fetch(Indexer(200, body)) == {"USDC": Decimal("-12.5")}


def test_perps_long_and_short_closed_ignored_duplicates_summed() -> None:
    """OPEN perps keyed BASE/USD:USDC with signed size; non-OPEN skipped; one market summed."""
    body = wrapped(
        openPerpetualPositions={
            "BTC-USD": perp("BTC-USD", "LONG", "0.25"),
            "ETH-USD": perp("ETH-USD", "SHORT", "-1.5"),
            "ETH-USD#2": perp("ETH-USD", "SHORT", "-0.5"),
            "SOL-USD": perp("SOL-USD", "LONG", "10", status="CLOSED"),
            "1INCH-USD": perp("1INCH-USD", "LONG", "100"),
        },
        assetPositions={
            "USDC": asset("USDC", "LONG", "100"),
            "DYDX": asset("DYDX", "LONG", "3"),
        },
    )
    assert fetch(Indexer(200, body)) == {
        "USDC": Decimal(100),
        "DYDX": Decimal(3),
        "BTC/USD:USDC": Decimal("0.25"),
        "ETH/USD:USDC": Decimal(-2),
        "1INCH/USD:USDC": Decimal(100),
    }


def test_zero_entries_give_empty_balances() -> None:
    """A subaccount with no positions at all reads as {} (not a failure)."""
    body = wrapped(assetPositions={}, openPerpetualPositions={})
    assert fetch(Indexer(200, body)) == {}


def test_json_numbers_are_accepted_exactly() -> None:
    """A size sent as a JSON number is parsed exactly, not through float."""
    body = (
        b'{"subaccount": {"assetPositions": {"USDC": {"symbol": "USDC", "side": "LONG",'
        b' "size": 0.30000000000000004}}, "openPerpetualPositions": {}}}'
    )
    assert fetch(Indexer(200, body)) == {"USDC": Decimal("0.30000000000000004")}


def test_404_is_an_unknown_subaccount_config_error() -> None:
    """The indexer's 404 means the configured address/subaccount is unknown: kind config."""
    body = json.dumps(
        {"errors": [{"msg": f"No subaccount found with address {ADDRESS} and subaccountNumber 0"}]}
    ).encode()
    with pytest.raises(VenueConfigError, match="unknown subaccount") as info:
        fetch(Indexer(404, body))
    assert info.value.kind == "config"
    assert "HTTP 404" in str(info.value)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "1500", "RateLimit-Reset": "1795491615000"}, 1.5),
        ({"Retry-After": "250"}, 0.25),
        ({}, None),
    ],
)
def test_429_retry_after_is_milliseconds(headers: dict[str, str], expected: float | None) -> None:
    """dYdX's Retry-After counts milliseconds (msBeforeNext): converted to seconds."""
    body = b'{"errors":[{"msg":"Too many requests"}]}'
    with pytest.raises(VenueRateLimited) as info:
        fetch(Indexer(429, body, headers))
    assert info.value.retry_after == expected


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (403, b'{"errors":[{"code":"GEOBLOCKED","msg":"blocked"}]}', VenueAuthError, "GEOBLOCKED"),
        (400, b'{"errors":[{"msg":"subaccountNumber must be"}]}', VenueConfigError, "HTTP 400"),
        (500, b'{"errors":[{"msg":"Internal Server Error"}]}', VenueUnavailable, "HTTP 500"),
        (502, b"<html>Bad Gateway</html>", VenueUnavailable, "HTTP 502"),
    ],
)
def test_other_statuses_map_to_the_error_tree(
    status: int, body: bytes, error: type[VenueError], text: str
) -> None:
    """403 is auth (naming the venue's code), other 4xx config, 5xx unavailable."""
    with pytest.raises(error, match=text) as info:
        fetch(Indexer(status, body))
    assert type(info.value) is error


def test_transport_failures_are_transient() -> None:
    """A read timeout is VenueTimeout; a refused connection is VenueUnavailable."""

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(VenueTimeout):
        fetch(timeout)
    with pytest.raises(VenueUnavailable):
        fetch(refused)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"<html>indexer</html>", "not valid JSON"),
        (b'{"subaccount": {"assetPositions": {"USDC": {"sym', "not valid JSON"),
        (b'{"subaccount": []}', "subaccount is an array"),
        (b'{"other": {}}', "subaccount is missing"),
        (wrapped(assetPositions=[]), "assetPositions is an array"),
        (wrapped(assetPositions={"USDC": asset("USDC", "LONG", "-1")}), "USDC].size"),
        (wrapped(assetPositions={"USDC": asset("USDC", "LONG", "NaN")}), "USDC].size"),
        (wrapped(assetPositions={"USDC": asset("USDC", "LONG", "1e400")}), "USDC].size"),
        (wrapped(assetPositions={"USDC": asset("USDC", "LONG", True)}), "USDC].size"),
        (wrapped(assetPositions={"USDC": asset("USDC", "BUY", "1")}), "USDC].side"),
        (wrapped(assetPositions={"USDC": {"side": "LONG", "size": "1"}}), "symbol is missing"),
        (wrapped(openPerpetualPositions=None), "openPerpetualPositions is null"),
        (wrapped(openPerpetualPositions={"ETH-USD": perp("ETH-USD", "SHORT", "1.5")}), "sign"),
        (wrapped(openPerpetualPositions={"ETH-USD": perp("ETH-USD", "LONG", "-1.5")}), "sign"),
        (wrapped(openPerpetualPositions={"ETH-USD": perp("ETHUSD", "LONG", "1")}), "BASE-QUOTE"),
        (wrapped(openPerpetualPositions={"ETH-USD": perp("ETH-USD", "LONG", "x")}), "size"),
        (wrapped(subaccountNumber=3), "subaccountNumber is not the one requested"),
        (wrapped(address="dydx1someoneelse"), "address is not the one requested"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, field: str) -> None:
    """Non-JSON, wrong types, negative or non-finite sizes, bad sides and wrong accounts."""
    with pytest.raises(MalformedVenueResponse) as info:
        fetch(Indexer(200, body))
    assert field in str(info.value)


def test_messages_never_contain_amounts() -> None:
    """A malformed position's message names the field, not the size from the body."""
    for body in (
        wrapped(assetPositions={"USDC": asset("USDC", "LONG", "-98765.4321")}),
        wrapped(openPerpetualPositions={"ETH-USD": perp("ETH-USD", "SHORT", "98765.4321")}),
        wrapped(assetPositions={"98765.4321": asset("USDC", "SIDEWAYS", "1")}),
    ):
        with pytest.raises(MalformedVenueResponse) as info:
            fetch(Indexer(200, body))
        assert "98765" not in str(info.value)


@pytest.mark.parametrize(
    "options",
    [
        {"address": "dydx1/../../v4/other"},
        {"address": ""},
        {"subaccount": -1},
        {"subaccount": 128_001},
    ],
)
def test_bad_configuration_is_refused_at_construction(options: dict[str, Any]) -> None:
    """An address that could escape the path, or a subaccount out of range, is a ValueError."""
    with pytest.raises(ValueError, match="dYdX"):
        fetch(Indexer(200, wrapped()), **options)
