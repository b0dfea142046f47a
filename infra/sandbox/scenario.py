"""The sandbox venue's scenario: accounts, balances, latency, rate limits and injected faults.

A scenario is a TOML file (see ``data/scenario.toml`` for a commented example)::

    latency_ms = 0                    # optional global latency of every response
    [prices]                          # USD marks of the public Coinbase product route
    BTC = "60000"
    [rate_limits.coinbase]            # optional fixed-window limit, per API key
    requests = 30
    window_ms = 1000
    [rate_limits.dydx]                # optional, per client IP (every address shares it)
    requests = 100
    window_ms = 10000

    [[accounts]]
    id = "cb-main"
    venue = "coinbase"
    key_name = "organizations/…/apiKeys/…"     # the JWT ``kid`` the sandbox accepts
    public_key_file = "keys/cb-main.pub.pem"   # or public_key = "-----BEGIN PUBLIC KEY-----…"
    page_size = 2                              # optional cap on accounts per page
    latency_ms = 5                             # optional, overrides the global latency
    balances = [{currency = "BTC", available = "1", hold = "0.25", type = "ACCOUNT_TYPE_CRYPTO"}]
    faults = [{kind = "status_5xx", status = 503, times = 2}]

    [[accounts]]
    id = "dydx-0"
    venue = "dydx"
    address = "dydx1…"
    subaccount = 0
    assets = [{symbol = "USDC", side = "LONG", size = "10200"}]
    perpetuals = [{market = "ETH-USD", side = "SHORT", size = "1.5"}]

    [[accounts]]
    id = "kraken-main"
    venue = "kraken"
    api_key = "…"                              # the API-Key header the sandbox accepts
    api_secret_file = "keys/kraken-main.secret" # or api_secret = "<base64>" (verifies API-Sign)
    balances = [{asset = "XXBT", balance = "0.5", hold_trade = "0.1"}]  # Kraken asset ids
    rate_limit = {max_counter = 20, decay_per_second = 0.5}  # optional; Balance costs 1

    [[accounts]]
    id = "binance-main"
    venue = "binance"                          # [rate_limits.binance]: requests per client IP
    api_key = "…"                              # the X-MBX-APIKEY header the sandbox accepts
    api_secret_file = "keys/binance-main.secret" # or api_secret = "…" (verifies signature)
    uid = 354937868                            # optional
    balances = [{asset = "BTC", free = "0.5", locked = "0.1"}]

Validation is strict: unknown keys, wrong types, float amounts, negative unsigned amounts,
duplicate ids or credentials are refused with a :class:`ScenarioError` naming the file, the
account and the field (never the value, which may be a balance). Amounts are decimal strings,
parsed exactly into :class:`~decimal.Decimal`.

Fault rules (``faults``, tried in order; the first rule with requests left applies and
consumes one): ``kind`` is one of :class:`FaultKind`; ``times`` is how many requests the rule
applies to (``-1`` or ``"always"``: every request). Per kind: ``status_5xx`` takes ``status``
(500–599, default 503) and ``variant`` (``json`` | ``html``); ``rate_limit`` takes
``retry_after_ms`` (default 1000; sent in the venue's unit) and ``variant``; ``timeout`` takes
``seconds`` (default 30: longer than any client timeout); ``malformed`` takes ``variant``
(``html`` | ``truncated`` | ``bad_amount`` | ``negative``); ``auth`` and ``reset`` take nothing;
``none`` serves its requests normally (``[{kind = "none", times = 1}, {kind = "reset", times =
1}]``: the first request answers, the second is reset).

Venue account types are registered in :data:`ACCOUNT_PARSERS`; a new venue adds its account
dataclass and parser there and its routes in :mod:`infra.sandbox.app`.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import math
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, Final

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from domain.amounts import InvalidAmount, parse_amount

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

COINBASE_ACCOUNT_TYPES: Final = frozenset(
    {
        "ACCOUNT_TYPE_UNSPECIFIED",
        "ACCOUNT_TYPE_CRYPTO",
        "ACCOUNT_TYPE_FIAT",
        "ACCOUNT_TYPE_VAULT",
        "ACCOUNT_TYPE_PERP_FUTURES",
        # The docs' example shows the short form; real data uses ACCOUNT_TYPE_*.
        "CRYPTO",
        "FIAT",
        "VAULT",
    }
)
DYDX_SIDES: Final = frozenset({"LONG", "SHORT"})
MAX_LATENCY_MS: Final = 600_000
MAX_SUBACCOUNT: Final = 128_000
MAX_COINBASE_PAGE: Final = 250

_ASSET_CODE = re.compile(r"^[A-Z0-9][A-Z0-9.]{0,19}$")
_DYDX_ADDRESS = re.compile(r"^[A-Za-z0-9]{1,90}$")
_DYDX_MARKET = re.compile(r"^[A-Z0-9]{1,20}-USD$")
_ACCOUNT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
_KRAKEN_API_KEY = re.compile(r"^[!-~]{1,512}$")
_BINANCE_CREDENTIAL = re.compile(r"^[!-~]{1,512}$")


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file, account and field."""


class FaultKind(enum.StrEnum):
    """What an injected fault does to a request."""

    STATUS_5XX = "status_5xx"
    RATE_LIMIT = "rate_limit"
    TIMEOUT = "timeout"
    MALFORMED = "malformed"
    AUTH = "auth"
    RESET = "reset"
    #: Served normally: a rule that lets requests through before the next rule's fault.
    NONE = "none"


#: Body variants each kind accepts; the first is the default.
FAULT_VARIANTS: Final[Mapping[FaultKind, tuple[str, ...]]] = MappingProxyType(
    {
        FaultKind.STATUS_5XX: ("json", "html"),
        FaultKind.RATE_LIMIT: ("json", "html"),
        FaultKind.MALFORMED: ("html", "truncated", "bad_amount", "negative"),
    }
)
_FAULT_FIELDS: Final[Mapping[FaultKind, frozenset[str]]] = MappingProxyType(
    {
        FaultKind.STATUS_5XX: frozenset({"status", "variant"}),
        FaultKind.RATE_LIMIT: frozenset({"retry_after_ms", "variant"}),
        FaultKind.TIMEOUT: frozenset({"seconds"}),
        FaultKind.MALFORMED: frozenset({"variant"}),
        FaultKind.AUTH: frozenset(),
        FaultKind.RESET: frozenset(),
        FaultKind.NONE: frozenset(),
    }
)


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected-fault rule; ``times`` None means every request."""

    kind: FaultKind
    times: int | None
    status: int = 503
    retry_after_ms: int = 1000
    seconds: float = 30.0
    variant: str = ""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A fixed-window limit: ``requests`` per ``window_ms`` milliseconds."""

    requests: int
    window_ms: int


@dataclass(frozen=True, kw_only=True)
class VenueAccount:
    """What every sandbox account has: an id, an optional latency and its fault rules."""

    venue: ClassVar[str] = ""
    id: str
    latency_ms: int | None = None
    faults: tuple[Fault, ...] = ()


@dataclass(frozen=True, slots=True)
class CoinbaseEntry:
    """One Coinbase account (wallet/vault) of a portfolio: one currency, available + hold."""

    currency: str
    available: Decimal
    hold: Decimal
    type: str = "ACCOUNT_TYPE_CRYPTO"
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class CoinbaseAccount(VenueAccount):
    """A Coinbase CDP API key and the accounts list it sees."""

    venue: ClassVar[str] = "coinbase"
    key_name: str
    public_key: PublicKey
    entries: tuple[CoinbaseEntry, ...] = ()
    page_size: int | None = None


@dataclass(frozen=True, slots=True)
class DydxAssetPosition:
    """A dYdX asset position: unsigned ``size`` and its ``side``."""

    symbol: str
    side: str
    size: Decimal

    @property
    def signed_size(self) -> Decimal:
        """``size`` if LONG, else ``-size``."""
        return self.size if self.side == "LONG" else -self.size


@dataclass(frozen=True, slots=True)
class DydxPerpetualPosition:
    """An open dYdX perpetual position: unsigned ``size`` here, signed on the wire."""

    market: str
    side: str
    size: Decimal
    entry_price: Decimal | None = None

    @property
    def signed_size(self) -> Decimal:
        """``size`` if LONG, else ``-size`` (the indexer's signed perp size)."""
        return self.size if self.side == "LONG" else -self.size


@dataclass(frozen=True, kw_only=True)
class DydxAccount(VenueAccount):
    """A dYdX v4 subaccount as the public indexer shows it."""

    venue: ClassVar[str] = "dydx"
    address: str
    subaccount: int
    assets: tuple[DydxAssetPosition, ...] = ()
    perpetuals: tuple[DydxPerpetualPosition, ...] = ()
    equity: Decimal | None = None
    free_collateral: Decimal | None = None


@dataclass(frozen=True, slots=True)
class KrakenEntry:
    """One Kraken balance: an asset id (``XXBT``, ``ETH.F``), its total and the part on hold."""

    asset: str
    balance: Decimal
    hold_trade: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class KrakenRateLimit:
    """Kraken's per-key call counter: +cost per call, −``decay_per_second``, capped at max."""

    max_counter: int
    decay_per_second: float


@dataclass(frozen=True, kw_only=True)
class KrakenAccount(VenueAccount):
    """A Kraken API key (public ``api_key``, base64 ``api_secret``) and its balances."""

    venue: ClassVar[str] = "kraken"
    api_key: str
    api_secret: str = field(repr=False)
    entries: tuple[KrakenEntry, ...] = ()
    rate_limit: KrakenRateLimit | None = None


@dataclass(frozen=True, slots=True)
class BinanceEntry:
    """One asset of a Binance Spot account: unsigned ``free`` and ``locked``."""

    asset: str
    free: Decimal
    locked: Decimal = Decimal(0)


@dataclass(frozen=True, kw_only=True)
class BinanceAccount(VenueAccount):
    """A Binance Spot API key (``api_key``), its HMAC secret and the balances it sees."""

    venue: ClassVar[str] = "binance"
    api_key: str
    api_secret: str = field(repr=False)
    entries: tuple[BinanceEntry, ...] = ()
    uid: int | None = None


@dataclass(frozen=True)
class Scenario:
    """Everything the sandbox serves."""

    accounts: tuple[VenueAccount, ...] = ()
    prices: Mapping[str, Decimal] = field(default_factory=dict)
    latency_ms: int = 0
    rate_limits: Mapping[str, RateLimit] = field(default_factory=dict)
    source: str = "<memory>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "prices", MappingProxyType(dict(self.prices)))
        object.__setattr__(self, "rate_limits", MappingProxyType(dict(self.rate_limits)))

    def account(self, account_id: str) -> VenueAccount:
        """The account with id ``account_id`` (KeyError when there is none)."""
        for account in self.accounts:
            if account.id == account_id:
                return account
        raise KeyError(account_id)

    def latency_of(self, account: VenueAccount) -> int:
        """The account's latency in ms, or the global one."""
        return self.latency_ms if account.latency_ms is None else account.latency_ms


# --------------------------------------------------------------------------- parsing


class _Table:
    """A TOML table being validated: typed getters, and a refusal of unknown keys."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise ScenarioError(f"{where}: must be a table")
        self.data: dict[str, object] = data
        self.where = where
        self._used: set[str] = set()

    def error(self, key: str, problem: str) -> ScenarioError:
        return ScenarioError(f"{self.where}: field '{key}' {problem}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> object:
        self._used.add(key)
        if key not in self.data:
            raise self.error(key, "is missing")
        return self.data[key]

    def string(self, key: str, default: str | None = None) -> str:
        if default is not None and key not in self.data:
            self._used.add(key)
            return default
        value = self.raw(key)
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, "must be a non-empty string")
        return value

    def optional_string(self, key: str) -> str | None:
        return self.string(key) if key in self.data else None

    def integer(self, key: str, low: int, high: int, default: int | None = None) -> int:
        if default is not None and key not in self.data:
            self._used.add(key)
            return default
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, "must be an integer")
        if not low <= value <= high:
            raise self.error(key, f"must be between {low} and {high}")
        return value

    def optional_integer(self, key: str, low: int, high: int) -> int | None:
        return self.integer(key, low, high) if key in self.data else None

    def amount(self, key: str, *, positive: bool = False, default: str | None = None) -> Decimal:
        if default is not None and key not in self.data:
            self._used.add(key)
            return Decimal(default)
        value = self.raw(key)
        if not isinstance(value, str):
            raise self.error(key, "must be a decimal string (amounts are quoted)")
        try:
            amount = parse_amount(value, allow_negative=False)
        except InvalidAmount as exc:
            raise self.error(key, f"is not a valid unsigned amount ({exc})") from None
        if positive and amount == 0:
            raise self.error(key, "must be greater than zero")
        return amount

    def optional_amount(self, key: str, *, positive: bool = False) -> Decimal | None:
        return self.amount(key, positive=positive) if key in self.data else None

    def choice(self, key: str, allowed: Collection[str]) -> str:
        options = tuple(sorted(allowed)) if isinstance(allowed, frozenset) else tuple(allowed)
        value = self.raw(key)
        if value not in options:
            raise self.error(key, f"must be one of {', '.join(options)}")
        assert isinstance(value, str)
        return value

    def tables(self, key: str) -> list[_Table]:
        if key not in self.data:
            self._used.add(key)
            return []
        value = self.raw(key)
        if not isinstance(value, list):
            raise self.error(key, "must be an array of tables")
        return [_Table(item, f"{self.where}, {key}[{i}]") for i, item in enumerate(value)]

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self._used)
        if unknown:
            raise ScenarioError(f"{self.where}: unknown field(s) {', '.join(map(repr, unknown))}")


def _fault(table: _Table) -> Fault:
    kind = FaultKind(table.choice("kind", tuple(k.value for k in FaultKind)))
    times_raw = table.raw("times")
    times: int | None
    if times_raw in ("always", -1):
        times = None
    elif isinstance(times_raw, int) and not isinstance(times_raw, bool) and times_raw >= 1:
        times = times_raw
    else:
        raise table.error("times", 'must be a positive integer, -1 or "always"')
    extra = set(table.data) - {"kind", "times"} - _FAULT_FIELDS[kind]
    if extra:
        raise ScenarioError(
            f"{table.where}: field(s) {', '.join(map(repr, sorted(extra)))} "
            f"do not apply to a '{kind}' fault"
        )
    fault = Fault(kind=kind, times=times)
    if kind is FaultKind.STATUS_5XX:
        fault = replace(fault, status=table.integer("status", 500, 599, default=503))
    if kind is FaultKind.RATE_LIMIT:
        retry = table.integer("retry_after_ms", 0, 3_600_000, default=1000)
        fault = replace(fault, retry_after_ms=retry)
    if kind is FaultKind.TIMEOUT:
        fault = replace(fault, seconds=_seconds(table))
    if kind in FAULT_VARIANTS:
        variants = FAULT_VARIANTS[kind]
        variant = table.choice("variant", variants) if table.has("variant") else variants[0]
        fault = replace(fault, variant=variant)
    table.finish()
    return fault


def _seconds(table: _Table) -> float:
    if not table.has("seconds"):
        return 30.0
    value = table.raw("seconds")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise table.error("seconds", "must be a number")
    try:
        seconds = float(value)
    except OverflowError:  # an integer past float's range
        seconds = math.inf
    if not math.isfinite(seconds) or not 0 < seconds <= 3600:
        raise table.error("seconds", "must be between 0 and 3600 (exclusive of 0)")
    return seconds


def _common(table: _Table) -> tuple[int | None, tuple[Fault, ...]]:
    latency = table.optional_integer("latency_ms", 0, MAX_LATENCY_MS)
    faults = tuple(_fault(item) for item in table.tables("faults"))
    return latency, faults


def _public_key(table: _Table, base_dir: Path) -> PublicKey:
    if table.has("public_key") == table.has("public_key_file"):
        raise table.error("public_key", "or 'public_key_file' must be given (exactly one)")
    if table.has("public_key"):
        pem = table.string("public_key").encode()
        key_field = "public_key"
    else:
        key_field = "public_key_file"
        path = Path(table.string("public_key_file"))
        path = path if path.is_absolute() else base_dir / path
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise table.error(key_field, f"cannot be read ({exc.strerror})") from None
        except ValueError:  # "embedded null byte": no file can have that path
            raise table.error(key_field, "cannot be read (a NUL in the path)") from None
    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise table.error(key_field, "is not a PEM public key") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise table.error(key_field, "must be an EC P-256 (ES256) or Ed25519 public key")


def _coinbase_entry(table: _Table) -> CoinbaseEntry:
    currency = table.string("currency")
    if not _ASSET_CODE.match(currency):
        raise table.error("currency", "must be an upper-case asset code")
    entry = CoinbaseEntry(
        currency=currency,
        available=table.amount("available"),
        hold=table.amount("hold", default="0"),
        type=table.choice("type", COINBASE_ACCOUNT_TYPES)
        if table.has("type")
        else "ACCOUNT_TYPE_CRYPTO",
        name=table.optional_string("name"),
    )
    table.finish()
    return entry


def _coinbase_account(table: _Table, base_dir: Path) -> CoinbaseAccount:
    latency, faults = _common(table)
    return CoinbaseAccount(
        id=table.string("id"),
        latency_ms=latency,
        faults=faults,
        key_name=table.string("key_name"),
        public_key=_public_key(table, base_dir),
        entries=tuple(_coinbase_entry(item) for item in table.tables("balances")),
        page_size=table.optional_integer("page_size", 1, MAX_COINBASE_PAGE),
    )


def _dydx_asset(table: _Table) -> DydxAssetPosition:
    symbol = table.string("symbol")
    if not _ASSET_CODE.match(symbol):
        raise table.error("symbol", "must be an upper-case asset code")
    position = DydxAssetPosition(
        symbol=symbol,
        side=table.choice("side", DYDX_SIDES),
        size=table.amount("size", positive=True),
    )
    table.finish()
    return position


def _dydx_perpetual(table: _Table) -> DydxPerpetualPosition:
    market = table.string("market")
    if not _DYDX_MARKET.match(market):
        raise table.error("market", "must be a dYdX ticker like 'BTC-USD'")
    position = DydxPerpetualPosition(
        market=market,
        side=table.choice("side", DYDX_SIDES),
        size=table.amount("size", positive=True),
        entry_price=table.optional_amount("entry_price", positive=True),
    )
    table.finish()
    return position


def _unique(items: list[str], where: str, what: str) -> None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            raise ScenarioError(f"{where}: duplicate {what} '{item}'")
        seen.add(item)


def _dydx_account(table: _Table, base_dir: Path) -> DydxAccount:
    del base_dir
    latency, faults = _common(table)
    address = table.string("address")
    if not _DYDX_ADDRESS.match(address):
        raise table.error("address", "must be alphanumeric, at most 90 characters")
    assets = tuple(_dydx_asset(item) for item in table.tables("assets"))
    perpetuals = tuple(_dydx_perpetual(item) for item in table.tables("perpetuals"))
    _unique([a.symbol for a in assets], table.where, "asset symbol")
    _unique([p.market for p in perpetuals], table.where, "perpetual market")
    return DydxAccount(
        id=table.string("id"),
        latency_ms=latency,
        faults=faults,
        address=address,
        subaccount=table.integer("subaccount", 0, MAX_SUBACCOUNT),
        assets=assets,
        perpetuals=perpetuals,
        equity=table.optional_amount("equity"),
        free_collateral=table.optional_amount("free_collateral"),
    )


def _api_secret(table: _Table, base_dir: Path) -> tuple[str, str]:
    """The account's secret, inline (``api_secret``) or read from ``api_secret_file``
    (relative to the scenario's folder), stripped; with the field it came from."""
    if table.has("api_secret") == table.has("api_secret_file"):
        raise table.error("api_secret", "or 'api_secret_file' must be given (exactly one)")
    if table.has("api_secret"):
        key_field, secret = "api_secret", table.string("api_secret")
    else:
        key_field = "api_secret_file"
        path = Path(table.string(key_field))
        path = path if path.is_absolute() else base_dir / path
        try:
            secret = path.read_text(encoding="ascii")
        except (OSError, ValueError):  # ValueError: not ASCII, or a NUL in the path
            raise table.error(key_field, "cannot be read as ASCII text") from None
    secret = secret.strip()
    return key_field, secret


def _kraken_secret(table: _Table, base_dir: Path) -> str:
    key_field, secret = _api_secret(table, base_dir)
    try:
        decoded = base64.b64decode(secret, validate=True)
    except ValueError:  # binascii.Error is a ValueError
        decoded = b""
    if not decoded:
        raise table.error(key_field, "must be a non-empty base64 secret")
    return secret


def _kraken_entry(table: _Table) -> KrakenEntry:
    asset = table.string("asset")
    if not _ASSET_CODE.match(asset):
        raise table.error("asset", "must be an upper-case Kraken asset id")
    entry = KrakenEntry(
        asset=asset,
        balance=table.amount("balance"),
        hold_trade=table.amount("hold_trade", default="0"),
    )
    if entry.hold_trade > entry.balance:
        raise table.error("hold_trade", "must not exceed 'balance'")
    table.finish()
    return entry


def _kraken_rate_limit(table: _Table) -> KrakenRateLimit | None:
    if not table.has("rate_limit"):
        return None
    limit = _Table(table.raw("rate_limit"), f"{table.where}, rate_limit")
    max_counter = limit.integer("max_counter", 1, 10_000)
    decay = limit.raw("decay_per_second")
    if isinstance(decay, bool) or not isinstance(decay, int | float):
        raise limit.error("decay_per_second", "must be a number")
    try:
        per_second = float(decay)
    except OverflowError:  # an integer past float's range
        per_second = math.inf
    if not math.isfinite(per_second) or not 0 < per_second <= 10_000:
        raise limit.error("decay_per_second", "must be between 0 and 10000 (exclusive of 0)")
    limit.finish()
    return KrakenRateLimit(max_counter=max_counter, decay_per_second=per_second)


def _kraken_account(table: _Table, base_dir: Path) -> KrakenAccount:
    latency, faults = _common(table)
    api_key = table.string("api_key")
    if not _KRAKEN_API_KEY.match(api_key):
        raise table.error("api_key", "must be printable text without spaces")
    entries = tuple(_kraken_entry(item) for item in table.tables("balances"))
    _unique([e.asset for e in entries], table.where, "asset")
    return KrakenAccount(
        id=table.string("id"),
        latency_ms=latency,
        faults=faults,
        api_key=api_key,
        api_secret=_kraken_secret(table, base_dir),
        entries=entries,
        rate_limit=_kraken_rate_limit(table),
    )


def _binance_secret(table: _Table, base_dir: Path) -> str:
    key_field, secret = _api_secret(table, base_dir)
    if not _BINANCE_CREDENTIAL.match(secret):
        raise table.error(key_field, "must be printable text without spaces")
    return secret


def _binance_entry(table: _Table) -> BinanceEntry:
    asset = table.string("asset")
    if not _ASSET_CODE.match(asset):
        raise table.error("asset", "must be an upper-case asset code")
    entry = BinanceEntry(
        asset=asset, free=table.amount("free"), locked=table.amount("locked", default="0")
    )
    table.finish()
    return entry


def _binance_account(table: _Table, base_dir: Path) -> BinanceAccount:
    latency, faults = _common(table)
    api_key = table.string("api_key")
    if not _BINANCE_CREDENTIAL.match(api_key):
        raise table.error("api_key", "must be printable text without spaces")
    entries = tuple(_binance_entry(item) for item in table.tables("balances"))
    _unique([e.asset for e in entries], table.where, "asset")
    return BinanceAccount(
        id=table.string("id"),
        latency_ms=latency,
        faults=faults,
        api_key=api_key,
        api_secret=_binance_secret(table, base_dir),
        entries=entries,
        uid=table.optional_integer("uid", 1, 2**53),
    )


#: venue name → parser of one ``[[accounts]]`` table of that venue.
ACCOUNT_PARSERS: Final[dict[str, Callable[[_Table, Path], VenueAccount]]] = {
    "coinbase": _coinbase_account,
    "dydx": _dydx_account,
    "kraken": _kraken_account,
    "binance": _binance_account,
}


def _account(table: _Table, base_dir: Path) -> VenueAccount:
    account_id = table.string("id")
    if not _ACCOUNT_ID.match(account_id):
        raise table.error("id", "must be letters, digits, '-', '_', '.' or ':'")
    table.where = f"{table.where} (id '{account_id}')"
    venue = table.choice("venue", tuple(ACCOUNT_PARSERS))
    account = ACCOUNT_PARSERS[venue](table, base_dir)
    table.finish()
    return account


def _credential(account: VenueAccount) -> str | None:
    if isinstance(account, CoinbaseAccount):
        return f"coinbase key_name '{account.key_name}'"
    if isinstance(account, DydxAccount):
        return f"dydx address/subaccount '{account.address}/{account.subaccount}'"
    if isinstance(account, KrakenAccount):
        fingerprint = hashlib.sha256(account.api_key.encode()).hexdigest()[:12]
        return f"kraken api_key sha256:{fingerprint}"
    if isinstance(account, BinanceAccount):
        fingerprint = hashlib.sha256(account.api_key.encode()).hexdigest()[:12]
        return f"binance api_key sha256:{fingerprint}"
    return None


def _prices(table: _Table) -> dict[str, Decimal]:
    prices: dict[str, Decimal] = {}
    for asset in list(table.data):
        if not _ASSET_CODE.match(asset):
            raise table.error(asset, "is not an upper-case asset code")
        prices[asset] = table.amount(asset, positive=True)
    table.finish()
    return prices


def _rate_limits(table: _Table) -> dict[str, RateLimit]:
    limits: dict[str, RateLimit] = {}
    for venue in list(table.data):
        if venue not in ACCOUNT_PARSERS:
            raise table.error(venue, f"is not a venue ({', '.join(ACCOUNT_PARSERS)})")
        table.raw(venue)
        limit = _Table(table.data[venue], f"{table.where}.{venue}")
        limits[venue] = RateLimit(
            requests=limit.integer("requests", 1, 1_000_000),
            window_ms=limit.integer("window_ms", 1, 3_600_000),
        )
        limit.finish()
    table.finish()
    return limits


def parse_scenario(
    data: Mapping[str, object], *, source: str = "<memory>", base_dir: Path | None = None
) -> Scenario:
    """Validate a scenario given as parsed TOML; relative key files resolve against ``base_dir``."""
    root = _Table(dict(data), source)
    folder = base_dir if base_dir is not None else Path.cwd()
    latency = root.integer("latency_ms", 0, MAX_LATENCY_MS, default=0)
    prices = _prices(_Table(root.raw("prices"), f"{source} [prices]")) if root.has("prices") else {}
    limits = (
        _rate_limits(_Table(root.raw("rate_limits"), f"{source} [rate_limits]"))
        if root.has("rate_limits")
        else {}
    )
    accounts = tuple(
        _account(_Table(item.data, f"{source}, account #{i + 1}"), folder)
        for i, item in enumerate(root.tables("accounts"))
    )
    root.finish()
    _unique([a.id for a in accounts], source, "account id")
    _unique([c for a in accounts if (c := _credential(a)) is not None], source, "credential")
    return Scenario(
        accounts=accounts, prices=prices, latency_ms=latency, rate_limits=limits, source=source
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate the scenario TOML file at ``path``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ScenarioError(f"{file}: is not UTF-8 text") from None
    except OSError as exc:
        raise ScenarioError(f"{file}: cannot be read ({exc.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{file}: not valid TOML ({exc})") from None
    except ValueError:  # tomllib's int() of an integer past Python's 4300-digit limit
        raise ScenarioError(f"{file}: not valid TOML (an integer is too long)") from None
    except RecursionError:
        raise ScenarioError(f"{file}: not valid TOML (nested too deeply)") from None
    return parse_scenario(data, source=str(file), base_dir=file.parent.resolve())
