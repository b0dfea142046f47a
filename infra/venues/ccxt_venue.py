"""Any other venue through ccxt's async API (the optional extra ``recon[ccxt]``).

``exchange = "ccxt:<id>"`` reads ``fetch_balance()['total']``. ccxt is told to keep numbers as
strings (``exchange.number = str``: its balance arithmetic is string math), and each total is
parsed exactly into a Decimal — never through ccxt's floats. A venue whose JSON carries amounts
as numbers is parsed by ccxt's own JSON decoder first; every venue recon knows natively sends
strings.

Errors map to recon's venue tree::

    ccxt RequestTimeout                         → VenueTimeout
    ccxt RateLimitExceeded, DDoSProtection      → VenueRateLimited
    ccxt InvalidNonce                           → VenueUnavailable (a fresh nonce next attempt)
    ccxt AuthenticationError (PermissionDenied, AccountSuspended) → VenueAuthError
    ccxt NetworkError, ExchangeNotAvailable     → VenueUnavailable
    ccxt BadResponse, NullResponse              → MalformedVenueResponse
    ccxt ExchangeError (anything else)          → VenueConfigError

``base_url`` (``scheme://host[:port]``) replaces the scheme and host of every API URL ccxt
knows for the exchange, keeping each path (``/api/v3`` …), so a sandbox or proxy serves it.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from domain.amounts import InvalidAmount, parse_amount
from infra.venues.errors import (
    MalformedVenueResponse,
    VenueAuthError,
    VenueConfigError,
    VenueError,
    VenueRateLimited,
    VenueTimeout,
    VenueUnavailable,
)

#: Per-exchange options that keep ``fetch_balance`` to the calls it needs.
EXCHANGE_OPTIONS: Final[Mapping[str, Mapping[str, Any]]] = {
    # spot only: no futures/margin/sapi market loading (reference §5)
    "binance": {
        "fetchMarkets": {"types": ["spot"]},
        "fetchCurrencies": False,
        "fetchMargins": False,
    },
    # the v3 Advanced Trade accounts call (follows the cursor), not v2
    "coinbase": {"fetchBalance": "v3PrivateGetBrokerageAccounts"},
}


class CcxtUnavailable(RuntimeError):
    """ccxt is not installed (``pip install 'recon[ccxt]'``) or does not know the exchange."""


def load_exchange_class(exchange_id: str) -> type[Any]:
    """ccxt's async class for ``exchange_id``; CcxtUnavailable when absent."""
    try:
        module = importlib.import_module("ccxt.async_support")
    except ImportError as exc:
        raise CcxtUnavailable("ccxt is not installed: pip install 'recon[ccxt]'") from exc
    exchange_class = getattr(module, exchange_id, None)
    if not isinstance(exchange_class, type):
        raise CcxtUnavailable(f"ccxt has no exchange {exchange_id!r}")
    return exchange_class


def rebase_urls(urls: Any, base_url: str) -> Any:
    """``urls`` (ccxt's nested API URL table) with every scheme and host replaced."""
    if isinstance(urls, str):
        base = urlsplit(base_url)
        parts = urlsplit(urls)
        return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, parts.fragment))
    if isinstance(urls, dict):
        return {key: rebase_urls(value, base_url) for key, value in urls.items()}
    return urls


class CcxtClient:
    """One account at a ccxt-supported venue; one attempt per :meth:`fetch_balances`."""

    def __init__(
        self,
        exchange_id: str,
        *,
        api_key: str | None,
        api_secret: str | None,
        base_url: str | None,
        timeout: float,
    ) -> None:
        self._exchange_class = load_exchange_class(exchange_id)
        self._errors = importlib.import_module("ccxt.base.errors")
        self.exchange_id = exchange_id
        self._venue = f"ccxt:{exchange_id}"
        self._config: dict[str, Any] = {
            "timeout": int(timeout * 1000),
            "enableRateLimit": False,  # one call per attempt; pacing is recon's job
            "options": dict(EXCHANGE_OPTIONS.get(exchange_id, {})),
        }
        if api_key is not None:
            self._config["apiKey"] = api_key
        if api_secret is not None:
            self._config["secret"] = api_secret
        self._base_url = base_url

    def fetch_balances(self) -> dict[str, Decimal]:
        """Total per currency code, exact; runs ccxt's coroutine on a loop of its own."""
        return asyncio.run(self._fetch())

    async def _fetch(self) -> dict[str, Decimal]:
        exchange = self._exchange_class(dict(self._config))
        exchange.number = str
        if self._base_url is not None:
            exchange.urls["api"] = rebase_urls(exchange.urls["api"], self._base_url)
        try:
            balance = await exchange.fetch_balance()
        except self._errors.BaseError as exc:
            raise self._mapped(exc) from None
        finally:
            await exchange.close()
        return self._totals(balance)

    def _totals(self, balance: Any) -> dict[str, Decimal]:
        totals = balance.get("total") if isinstance(balance, dict) else None
        if not isinstance(totals, dict):
            raise MalformedVenueResponse(f"{self._venue}: balance has no 'total' table")
        result: dict[str, Decimal] = {}
        for code, amount in totals.items():
            if amount is None:
                raise MalformedVenueResponse(f"{self._venue}: no total for {code!s:.20}")
            try:
                result[str(code)] = parse_amount(amount if isinstance(amount, str) else str(amount))
            except InvalidAmount as exc:
                raise MalformedVenueResponse(
                    f"{self._venue}: total of {code!s:.20}: {exc}"
                ) from None
        return result

    def _mapped(self, exc: Exception) -> VenueError:
        errors = self._errors
        name = type(exc).__name__
        venue = self._venue
        checks: tuple[tuple[str, type[VenueError], str], ...] = (
            ("RequestTimeout", VenueTimeout, "timed out"),
            ("RateLimitExceeded", VenueRateLimited, "rate limited"),
            ("DDoSProtection", VenueRateLimited, "rate limited"),
            ("InvalidNonce", VenueUnavailable, "nonce refused"),
            ("AuthenticationError", VenueAuthError, "credentials refused"),
            ("NetworkError", VenueUnavailable, "venue unavailable"),
            ("BadResponse", MalformedVenueResponse, "malformed response"),
            ("ExchangeError", VenueConfigError, "request refused"),
        )
        for ccxt_name, error_class, what in checks:
            ccxt_class = getattr(errors, ccxt_name, None)
            if isinstance(ccxt_class, type) and isinstance(exc, ccxt_class):
                return error_class(f"{venue}: {what} ({name})")
        return VenueUnavailable(f"{venue}: venue error ({name})")
