"""dYdX v4 indexer on the sandbox: ``GET /v4/addresses/{address}/subaccountNumber/{n}``.

The body is the wrapped ``{"subaccount": SubaccountResponseObject}`` the real indexer sends
(not the unwrapped object of its generated docs): asset positions keyed by symbol with an
unsigned ``size`` and a ``side``; open perpetual positions keyed by market with a *signed*
``size``; amounts as strings; block heights as strings. Errors use ``{"errors": [{"msg"}]}``;
429 carries ``Retry-After`` in milliseconds and the ``RateLimit-*`` headers (reset in epoch ms),
which successful responses carry too when the scenario sets a dYdX rate limit. No auth.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from domain.amounts import ZERO, add, format_amount, multiply, subtract
from infra.sandbox.scenario import (
    MAX_SUBACCOUNT,
    DydxAccount,
    DydxAssetPosition,
    DydxPerpetualPosition,
    Fault,
    FaultKind,
)
from infra.sandbox.state import (
    RateVerdict,
    ResetConnection,
    SandboxState,
    VenueModule,
    html_error,
    reason_phrase,
    truncate,
)

SUBACCOUNT_PATH: Final = "/v4/addresses/{address}/subaccountNumber/{number}"
#: The indexer's default limit, used in headers when the scenario sets none.
DEFAULT_LIMIT: Final = 100
_INITIAL_MARGIN: Final = Decimal("0.05")
_UPDATED_AT_HEIGHT: Final = "52228833"
_LATEST_HEIGHT: Final = "52246761"
_CREATED_AT: Final = "2025-10-22T08:34:05.883Z"
_CREATED_AT_HEIGHT: Final = "52228825"


def errors_response(
    status: int, msg: str, headers: Mapping[str, str] | None = None, **extra: str
) -> Response:
    """The indexer's error body ``{"errors": [{"msg": …}]}``."""
    body = {"errors": [{**extra, "msg": msg}]}
    return Response(
        json.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _mark(perp: DydxPerpetualPosition, prices: Mapping[str, Decimal]) -> Decimal:
    base = perp.market.removesuffix("-USD")
    return prices.get(base, perp.entry_price if perp.entry_price is not None else ZERO)


def _perpetual_json(
    perp: DydxPerpetualPosition, subaccount: int, prices: Mapping[str, Decimal]
) -> dict[str, Any]:
    mark = _mark(perp, prices)
    entry = perp.entry_price if perp.entry_price is not None else mark
    size = perp.signed_size
    return {
        "market": perp.market,
        "status": "OPEN",
        "side": perp.side,
        "size": format_amount(size),
        "maxSize": format_amount(size),
        "entryPrice": format_amount(entry),
        "exitPrice": None,
        "realizedPnl": "0",
        "unrealizedPnl": format_amount(multiply(size, subtract(mark, entry))),
        "createdAt": _CREATED_AT,
        "createdAtHeight": _CREATED_AT_HEIGHT,
        "closedAt": None,
        "sumOpen": format_amount(perp.size),
        "sumClose": "0",
        "netFunding": "0",
        "subaccountNumber": subaccount,
    }


def _equity(account: DydxAccount, prices: Mapping[str, Decimal]) -> tuple[Decimal, Decimal]:
    """Rough equity and free collateral: cash plus perp notional, less 5 % initial margin."""
    equity = ZERO
    for asset in account.assets:
        price = Decimal(1) if asset.symbol in {"USDC", "USD"} else prices.get(asset.symbol, ZERO)
        equity = add(equity, multiply(asset.signed_size, price))
    margin = ZERO
    for perp in account.perpetuals:
        mark = _mark(perp, prices)
        equity = add(equity, multiply(perp.signed_size, mark))
        margin = add(margin, multiply(multiply(perp.size, mark), _INITIAL_MARGIN))
    free = subtract(equity, margin)
    return (
        account.equity if account.equity is not None else equity,
        account.free_collateral if account.free_collateral is not None else free,
    )


def subaccount_json(account: DydxAccount, prices: Mapping[str, Decimal]) -> dict[str, Any]:
    """The wrapped ``{"subaccount": SubaccountResponseObject}`` of ``account``."""
    equity, free = _equity(account, prices)
    number = account.subaccount
    asset_ids = {a.symbol: str(i) for i, a in enumerate(sorted(account.assets, key=_usdc_first))}
    return {
        "subaccount": {
            "address": account.address,
            "subaccountNumber": number,
            "equity": format_amount(equity),
            "freeCollateral": format_amount(free),
            "openPerpetualPositions": {
                p.market: _perpetual_json(p, number, prices) for p in account.perpetuals
            },
            "assetPositions": {
                a.symbol: {
                    "symbol": a.symbol,
                    "side": a.side,
                    "size": format_amount(a.size),
                    "assetId": asset_ids[a.symbol],
                    "subaccountNumber": number,
                }
                for a in account.assets
            },
            "marginEnabled": True,
            "updatedAtHeight": _UPDATED_AT_HEIGHT,
            "latestProcessedBlockHeight": _LATEST_HEIGHT,
        }
    }


def _usdc_first(asset: DydxAssetPosition) -> tuple[bool, str]:
    return (asset.symbol != "USDC", asset.symbol)


def ratelimit_headers(limit: int, remaining: int, reset_epoch_ms: int) -> dict[str, str]:
    """The indexer's ``RateLimit-*`` headers (reset as epoch milliseconds)."""
    return {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(reset_epoch_ms),
    }


def rate_limited(verdict: RateVerdict) -> Response:
    """The indexer's 429: ``Retry-After`` in milliseconds, ``RateLimit-*`` headers."""
    headers = ratelimit_headers(verdict.limit, 0, verdict.reset_epoch_ms)
    headers["Retry-After"] = str(verdict.reset_in_ms)
    return errors_response(429, "Too many requests", headers)


def _malformed(body: dict[str, Any], variant: str) -> Response:
    if variant == "html":
        return html_error(200, "OK")
    subaccount = body["subaccount"]
    positions = subaccount["assetPositions"] or subaccount["openPerpetualPositions"]
    if variant in {"bad_amount", "negative"} and positions:
        first = next(iter(positions.values()))
        first["size"] = "NaN" if variant == "bad_amount" else "-" + first["size"].lstrip("-")
    raw = json.dumps(body).encode()
    if variant == "truncated":
        raw = truncate(raw)
    return Response(raw, media_type="application/json")


def _subaccount_number(text: str) -> int | None:
    if not text.isdigit() or len(text) > 6:
        return None
    number = int(text)
    return number if number <= MAX_SUBACCOUNT else None


class _Dydx:
    """The route handler, over the shared sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.by_subaccount = {
            (a.address, a.subaccount): a
            for a in state.scenario.accounts
            if isinstance(a, DydxAccount)
        }

    async def subaccount(self, request: Request) -> Response:
        client = request.client.host if request.client is not None else "unknown"
        verdict = self.state.rate_check("dydx", client)
        if verdict is not None and not verdict.allowed:
            await self.state.pause(None)
            return rate_limited(verdict)
        headers = (
            ratelimit_headers(verdict.limit, verdict.remaining, verdict.reset_epoch_ms)
            if verdict is not None
            else {}
        )
        address = request.path_params["address"]
        raw_number = request.path_params["number"]
        number = _subaccount_number(raw_number)
        if number is None:
            return errors_response(
                400,
                f"subaccountNumber must be a non-negative integer less than {MAX_SUBACCOUNT + 1}",
                headers,
                value=raw_number,
                param="subaccountNumber",
                location="params",
            )
        account = self.by_subaccount.get((address, number))
        if account is None:
            await self.state.pause(None)
            return errors_response(
                404,
                f"No subaccount found with address {address} and subaccountNumber {number}",
                headers,
            )
        fault = self.state.admit(account)
        await self.state.pause(account)
        body = subaccount_json(account, self.state.scenario.prices)
        if fault is not None:
            response = await self._fault(fault, body)
            if response is not None:
                return response
        return Response(json.dumps(body), media_type="application/json", headers=headers)

    async def _fault(self, fault: Fault, body: dict[str, Any]) -> Response | None:
        if fault.kind is FaultKind.STATUS_5XX:
            reason = reason_phrase(fault.status)
            if fault.variant == "html":
                return html_error(fault.status, reason)
            return errors_response(fault.status, reason)
        if fault.kind is FaultKind.RATE_LIMIT:
            limit = self.state.rate_limit("dydx")
            verdict = RateVerdict(
                allowed=False,
                limit=limit.requests if limit is not None else DEFAULT_LIMIT,
                remaining=0,
                reset_in_ms=fault.retry_after_ms,
            )
            if fault.variant == "html":
                response = html_error(429, "Too Many Requests")
                response.headers["Retry-After"] = str(fault.retry_after_ms)
                return response
            return rate_limited(verdict)
        if fault.kind is FaultKind.AUTH:
            return errors_response(
                403,
                "Because you appear to be a resident of, or using this platform from, "
                "a jurisdiction that violates our terms of use, you have been blocked.",
                code="GEOBLOCKED",
            )
        if fault.kind is FaultKind.MALFORMED:
            return _malformed(body, fault.variant)
        if fault.kind is FaultKind.RESET:
            return ResetConnection()
        if fault.kind is FaultKind.TIMEOUT:
            await self.state.hang(fault.seconds)
        return None


def routes(state: SandboxState) -> Sequence[BaseRoute]:
    """The dYdX indexer routes over ``state``."""
    return [Route(SUBACCOUNT_PATH, _Dydx(state).subaccount, methods=["GET"])]


MODULE: Final = VenueModule("dydx", routes)
