"""Coinbase Advanced Trade v3 on the sandbox: the accounts list (JWT auth, pagination) and
the public product price route, with Coinbase's error bodies and rate-limit headers.

Auth follows what the reference says a fake server must check: ``Authorization: Bearer <JWT>``
whose header ``kid`` names a scenario key, signature by that key's public key (ES256, or EdDSA
for Ed25519 keys), ``exp`` and ``nbf``, ``sub`` equal to the key name when present, and a
``uri`` (or ``uris[0]``) claim ending in ``<METHOD> <path>`` whatever host or scheme precedes
the path. ``iss``, ``aud`` and the exact host are not checked. Any failure is a 401 with the
plain-text body ``Unauthorized``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from decimal import Context, Decimal
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from infra.sandbox.scenario import CoinbaseAccount, CoinbaseEntry, Fault, FaultKind
from infra.sandbox.state import (
    RateVerdict,
    ResetConnection,
    SandboxState,
    VenueModule,
    html_error,
    reason_phrase,
    truncate,
)

ACCOUNTS_PATH: Final = "/api/v3/brokerage/accounts"
PRODUCT_PATH: Final = "/api/v3/brokerage/market/products/{product_id}"
DEFAULT_LIMIT: Final = 49
MAX_LIMIT: Final = 250
#: Coinbase renders balances with 16 fractional digits ("0.5000000000000000").
_QUANTUM: Final = Decimal("1e-16")
_WIDE: Final = Context(prec=80)
_CREATED_AT: Final = "2024-01-04T06:20:06.456Z"
_UPDATED_AT: Final = "2026-11-01T00:00:00.000Z"
_NAMESPACE: Final = uuid.UUID("6f1c7a52-3a59-4b3e-9a0c-5d1e0b7a2c11")
_PRODUCT_ID = re.compile(r"^([A-Z0-9]{1,20})-([A-Z0-9]{1,20})$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def error_response(status: int, error: str, details: str) -> Response:
    """Coinbase's JSON error body ``{error, error_details, message}``."""
    body = {"error": error, "error_details": details, "message": details}
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def unauthorized() -> Response:
    """The 401 Coinbase sends for a missing, bad or expired JWT: plain text."""
    return PlainTextResponse("Unauthorized", status_code=401)


def coinbase_amount(amount: Decimal) -> str:
    """A balance as Coinbase writes it: fixed-point, 16 fractional digits when they suffice."""
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -16:
        amount = amount.quantize(_QUANTUM, context=_WIDE)
    return format(amount, "f")


def uri_matches(claim: str, method: str, path: str) -> bool:
    """Whether a JWT ``uri`` claim names ``method`` and ``path`` (any host, scheme, no query)."""
    claim_method, sep, target = claim.partition(" ")
    if not sep or claim_method != method:
        return False
    target = _SCHEME.sub("", target.strip())
    slash = target.find("/")
    if slash < 0:
        return False
    return target[slash:].split("?", 1)[0] == path


def _uri_claim(claims: Mapping[str, Any]) -> str | None:
    uri = claims.get("uri")
    if isinstance(uri, str):
        return uri
    uris = claims.get("uris")
    if isinstance(uris, list) and uris and isinstance(uris[0], str):
        return uris[0]
    return None


def _account_json(account: CoinbaseAccount, index: int, entry: CoinbaseEntry) -> dict[str, Any]:
    kind = entry.type.removeprefix("ACCOUNT_TYPE_")
    default_name = f"{entry.currency} {'Vault' if kind == 'VAULT' else 'Wallet'}"
    first_of_currency = next(e for e in account.entries if e.currency == entry.currency) is entry
    return {
        "uuid": str(uuid.uuid5(_NAMESPACE, f"{account.id}/{index}")),
        "name": entry.name or default_name,
        "currency": entry.currency,
        "available_balance": {
            "value": coinbase_amount(entry.available),
            "currency": entry.currency,
        },
        "default": first_of_currency and kind != "VAULT",
        "active": True,
        "created_at": _CREATED_AT,
        "updated_at": _UPDATED_AT,
        "deleted_at": None,
        "type": entry.type,
        "ready": True,
        "hold": {"value": coinbase_amount(entry.hold), "currency": entry.currency},
        "retail_portfolio_id": str(uuid.uuid5(_NAMESPACE, account.id)),
        "platform": "ACCOUNT_PLATFORM_CONSUMER",
    }


class BadRequest(Exception):
    """A query parameter Coinbase would refuse with 400 INVALID_ARGUMENT."""


def _positive_int(text: str, name: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise BadRequest(f"invalid {name}")
    return int(text)


def accounts_page(
    account: CoinbaseAccount, limit_text: str | None, cursor: str | None
) -> dict[str, Any]:
    """One page of ``GET /api/v3/brokerage/accounts`` for ``limit`` and ``cursor``."""
    limit = DEFAULT_LIMIT if not limit_text else _positive_int(limit_text, "limit")
    if limit < 1:
        raise BadRequest("invalid limit")
    limit = min(limit, MAX_LIMIT, account.page_size or MAX_LIMIT)
    start = 0 if not cursor else _positive_int(cursor, "cursor")
    if start > len(account.entries):
        raise BadRequest("invalid cursor")
    stop = min(start + limit, len(account.entries))
    has_next = stop < len(account.entries)
    return {
        "accounts": [_account_json(account, i, account.entries[i]) for i in range(start, stop)],
        "has_next": has_next,
        "cursor": str(stop) if has_next else "",
        "size": stop - start,
    }


def _ratelimit_headers(verdict: RateVerdict | None) -> dict[str, str]:
    if verdict is None:
        return {}
    return {
        "x-ratelimit-limit": str(verdict.limit),
        "x-ratelimit-remaining": str(verdict.remaining),
        "x-ratelimit-reset": str(verdict.reset_epoch_ms // 1000),
    }


def rate_limited(retry_after_seconds: int, variant: str = "json") -> Response:
    """A Coinbase 429 with ``Retry-After`` in seconds; JSON or the HTML page a CDN sends."""
    if variant == "html":
        response = html_error(429, "Too Many Requests")
    else:
        response = error_response(429, "rate_limit_exceeded", "Too many requests")
    response.headers["Retry-After"] = str(retry_after_seconds)
    return response


def _malformed(page: dict[str, Any], variant: str) -> Response:
    if variant == "html":
        return html_error(200, "OK")
    if variant in {"bad_amount", "negative"} and page["accounts"]:
        first = page["accounts"][0]["available_balance"]
        first["value"] = "NaN" if variant == "bad_amount" else "-1.0000000000000000"
    body = json.dumps(page).encode()
    if variant == "truncated":
        body = truncate(body)
    return Response(body, media_type="application/json")


class _Coinbase:
    """The route handlers, over the shared sandbox state."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.by_key = {
            a.key_name: a for a in state.scenario.accounts if isinstance(a, CoinbaseAccount)
        }

    def authenticate(self, request: Request) -> CoinbaseAccount | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        token = token.strip()
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return None
        account = self.by_key.get(kid) if isinstance(kid, str) else None
        if account is None:
            return None
        algorithm = "EdDSA" if isinstance(account.public_key, ed25519.Ed25519PublicKey) else "ES256"
        try:
            claims = jwt.decode(
                token,
                account.public_key,
                algorithms=[algorithm],
                options={"verify_aud": False, "require": ["exp"]},
            )
        except jwt.PyJWTError:
            return None
        if "sub" in claims and claims["sub"] != account.key_name:
            return None
        uri = _uri_claim(claims)
        if uri is None or not uri_matches(uri, request.method, request.url.path):
            return None
        return account

    async def accounts(self, request: Request) -> Response:
        account = self.authenticate(request)
        if account is None:
            return unauthorized()
        verdict = self.state.rate_check("coinbase", account.key_name)
        if verdict is not None and not verdict.allowed:
            await self.state.pause(account)
            response = rate_limited(verdict.retry_after_seconds)
            response.headers.update(_ratelimit_headers(verdict))
            return response
        fault = self.state.admit(account)
        await self.state.pause(account)
        if fault is not None and fault.kind is not FaultKind.MALFORMED:
            failure = await self._fault(fault)
            if failure is not None:
                return failure
        try:
            page = accounts_page(
                account, request.query_params.get("limit"), request.query_params.get("cursor")
            )
        except BadRequest as exc:
            return error_response(400, "INVALID_ARGUMENT", str(exc))
        if fault is not None and fault.kind is FaultKind.MALFORMED:
            return _malformed(page, fault.variant)
        return Response(
            json.dumps(page),
            media_type="application/json",
            headers=_ratelimit_headers(verdict),
        )

    async def _fault(self, fault: Fault) -> Response | None:
        if fault.kind is FaultKind.STATUS_5XX:
            reason = reason_phrase(fault.status)
            if fault.variant == "html":
                return html_error(fault.status, reason)
            code = "INTERNAL" if fault.status == 500 else "UNAVAILABLE"
            return error_response(fault.status, code, reason)
        if fault.kind is FaultKind.RATE_LIMIT:
            seconds = -(-fault.retry_after_ms // 1000)
            return rate_limited(seconds, fault.variant)
        if fault.kind is FaultKind.AUTH:
            return unauthorized()
        if fault.kind is FaultKind.RESET:
            return ResetConnection()
        if fault.kind is FaultKind.TIMEOUT:
            await self.state.hang(fault.seconds)
        return None

    async def product(self, request: Request) -> Response:
        await self.state.pause(None)
        product_id = request.path_params["product_id"]
        match = _PRODUCT_ID.match(product_id)
        price = self.state.scenario.prices.get(match.group(1)) if match else None
        if match is None or match.group(2) != "USD" or price is None:
            return error_response(404, "NOT_FOUND", "ProductID is invalid")
        base = match.group(1)
        body = {
            "product_id": product_id,
            "price": format(price, "f"),
            "price_percentage_change_24h": "0",
            "volume_24h": "0",
            "volume_percentage_change_24h": "0",
            "base_increment": "0.00000001",
            "quote_increment": "0.01",
            "quote_min_size": "1",
            "quote_max_size": "150000000",
            "base_min_size": "0.00000001",
            "base_max_size": "3400",
            "base_name": base,
            "quote_name": "US Dollar",
            "watched": False,
            "is_disabled": False,
            "new": False,
            "status": "online",
            "cancel_only": False,
            "limit_only": False,
            "post_only": False,
            "trading_disabled": False,
            "auction_mode": False,
            "product_type": "SPOT",
            "quote_currency_id": "USD",
            "base_currency_id": base,
            "mid_market_price": "",
            "base_display_symbol": base,
            "quote_display_symbol": "USD",
        }
        return Response(json.dumps(body), media_type="application/json")


def routes(state: SandboxState) -> Sequence[BaseRoute]:
    """The Coinbase routes over ``state``."""
    handlers = _Coinbase(state)
    return [
        Route(ACCOUNTS_PATH, handlers.accounts, methods=["GET"]),
        Route(PRODUCT_PATH, handlers.product, methods=["GET"]),
    ]


MODULE: Final = VenueModule("coinbase", routes)
