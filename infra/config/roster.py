"""The accounts file (TOML roster of DESIGN §2): policy, book source, prices, venue accounts.

:func:`load_roster` validates the whole file and raises one :class:`ConfigError` listing every
problem, each line naming the file, the account (by id, or ``accounts[i]`` without one) and the
field — never a secret or an amount. Unknown keys are refused, to catch typos; TOML floats are
refused, since they are not exact (amounts are quoted decimal strings, integers are fine).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from domain.amounts import InvalidAmount, multiply, parse_amount
from domain.policy import CRITICAL_MULTIPLE, DEFAULT_TOLERANCE, Policy, PriceTable
from infra.config.errors import ConfigError
from infra.config.secrets import SecretRef, parse_secret_ref, resolve
from infra.config.settings import Settings

VENUES: Final = ("coinbase", "dydx", "kraken", "binance", "sandbox")
#: Venues whose private balance API needs an API key and secret.
NEEDS_SECRETS: Final = frozenset({"coinbase", "kraken", "binance"})
#: Venues read without credentials (dYdX's public indexer).
NO_SECRETS: Final = frozenset({"dydx"})
#: Venues that have no on-chain address or subaccount.
NO_ADDRESS: Final = frozenset({"coinbase", "kraken", "binance"})

_CCXT_EXCHANGE: Final = re.compile(r"ccxt:[a-z][a-z0-9_]*\Z")
_ACCOUNT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


# --- the values the rest of recon uses ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateLimit:
    """An account's own request budget: ``per_second`` sustained, ``burst`` at once."""

    per_second: Decimal
    burst: int


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """One venue account: the unit of reconciliation."""

    id: str
    exchange: str
    base_url: str | None = None
    api_key: SecretRef | None = None
    api_secret: SecretRef | None = None
    address: str | None = None
    subaccount: int = 0
    #: venue asset code → book asset code (overrides the built-in table).
    asset_map: Mapping[str, str] = field(default_factory=dict)
    rate_limit: RateLimit | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "asset_map", MappingProxyType(dict(self.asset_map)))


@dataclass(frozen=True, slots=True)
class FileBookConfig:
    """The book is a JSON file, re-read every cycle; ``path`` is absolute."""

    path: Path
    source: Literal["file"] = "file"


@dataclass(frozen=True, slots=True)
class HttpBookConfig:
    """The book is served over HTTP: ``GET url`` returns the book JSON."""

    url: str
    source: Literal["http"] = "http"


@dataclass(frozen=True, slots=True)
class SqlBookConfig:
    """The book is a SQL table; ``query`` binds ``:account_id``; ``upsert`` serves sync."""

    url: str | SecretRef
    query: str
    upsert: str | None = None
    source: Literal["sql"] = "sql"


BookConfig = FileBookConfig | HttpBookConfig | SqlBookConfig


@dataclass(frozen=True, slots=True)
class PricesConfig:
    """USD marks: fixed ``marks``, and live ones from Coinbase when ``source`` says so."""

    source: Literal["static", "coinbase"] = "static"
    marks: Mapping[str, Decimal] = field(default_factory=dict)
    #: the Coinbase price endpoint's ``scheme://host[:port]`` (None: the public one).
    base_url: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "marks", MappingProxyType(dict(self.marks)))

    @property
    def table(self) -> PriceTable:
        """The fixed marks as the domain's price table (USD, USDC, USDT are 1 unless set)."""
        return PriceTable(self.marks)


@dataclass(frozen=True, slots=True)
class Roster:
    """The validated accounts file."""

    source: Path
    policy: Policy
    book: BookConfig
    prices: PricesConfig
    accounts: tuple[AccountConfig, ...]

    @property
    def base_dir(self) -> Path:
        """The accounts file's folder: relative paths in it are relative to this folder."""
        return self.source.parent

    def account(self, account_id: str) -> AccountConfig:
        """The account named ``account_id``; KeyError when the roster has none."""
        for account in self.accounts:
            if account.id == account_id:
                return account
        raise KeyError(account_id)

    def resolve_secret(self, ref: SecretRef, environ: Mapping[str, str]) -> str:
        """The value behind ``ref`` (``file:`` paths relative to the accounts file's folder)."""
        return resolve(ref, environ=environ, base_dir=self.base_dir)

    def check_secrets(self, environ: Mapping[str, str]) -> None:
        """Resolve every secret reference once; ConfigError lists each that cannot be read."""
        problems: list[str] = []
        for account in self.accounts:
            for name, ref in (("api_key", account.api_key), ("api_secret", account.api_secret)):
                if ref is not None:
                    try:
                        self.resolve_secret(ref, environ)
                    except ConfigError as exc:
                        problems.append(
                            f"{self.source}: account {account.id!r}: field {name!r}: {exc}"
                        )
        if isinstance(self.book, SqlBookConfig) and isinstance(self.book.url, SecretRef):
            try:
                self.resolve_secret(self.book.url, environ)
            except ConfigError as exc:
                problems.append(f"{self.source}: field 'book.url': {exc}")
        if problems:
            raise ConfigError(problems)


def load_roster(path: Path, settings: Settings) -> Roster:
    """Read and validate the accounts file at ``path``; its ``[policy]`` overrides ``settings``."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the accounts file is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the accounts file ({exc.strerror})") from None
    try:
        raw = tomllib.loads(text, parse_float=_TomlFloat)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except ValueError:  # tomllib's int() of an integer past Python's 4300-digit limit
        raise ConfigError(f"{path}: not valid TOML: an integer is too long") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None

    problems = _duplicate_ids(raw, path)
    try:
        model = _RosterModel.model_validate(raw)
    except ValidationError as exc:
        problems[:0] = _describe(exc, raw, path)
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)

    source = path.resolve()
    return Roster(
        source=source,
        policy=_policy(model.policy, settings, path),
        book=_book(model.book, source.parent),
        prices=PricesConfig(
            source=model.prices.source, marks=model.prices.marks, base_url=model.prices.base_url
        ),
        accounts=tuple(_account(account) for account in model.accounts),
    )


# --- conversion of the validated models -----------------------------------------------------


def _policy(model: _PolicyModel, settings: Settings, path: Path) -> Policy:
    threshold = model.threshold_usd if model.threshold_usd is not None else settings.threshold_usd
    critical = model.critical_usd if model.critical_usd is not None else settings.critical_usd
    if critical is None:
        critical = multiply(threshold, CRITICAL_MULTIPLE)
    tolerances = dict(model.tolerance)
    default_tolerance = tolerances.pop("default", DEFAULT_TOLERANCE)
    if critical < threshold:
        raise ConfigError(
            f"{path}: field 'policy.critical_usd': must be at least threshold_usd"
            " (unset, it is RECONCILIATION_CRITICAL_USD, else 100 × threshold_usd)"
        )
    return Policy(
        threshold_usd=threshold,
        critical_usd=critical,
        default_tolerance=default_tolerance,
        tolerances=tolerances,
    )


def _book(model: _BookModel, base_dir: Path) -> BookConfig:
    if model.source == "file":
        assert model.path is not None
        return FileBookConfig(path=base_dir / model.path)
    assert model.url is not None
    if model.source == "http":
        return HttpBookConfig(url=model.url)
    assert model.query is not None
    url: str | SecretRef = model.url
    if model.url.startswith(("env:", "file:")):
        url = parse_secret_ref(model.url)
    return SqlBookConfig(url=url, query=model.query, upsert=model.upsert)


def _account(model: _AccountModel) -> AccountConfig:
    return AccountConfig(
        id=model.id,
        exchange=model.exchange,
        base_url=model.base_url,
        api_key=parse_secret_ref(model.api_key) if model.api_key is not None else None,
        api_secret=parse_secret_ref(model.api_secret) if model.api_secret is not None else None,
        address=model.address,
        subaccount=model.subaccount if model.subaccount is not None else 0,
        asset_map=model.asset_map,
        rate_limit=(
            RateLimit(per_second=model.rate_limit.per_second, burst=model.rate_limit.burst)
            if model.rate_limit is not None
            else None
        ),
    )


# --- validation -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _TomlFloat:
    """A TOML float as written: kept apart so that it is refused by name, not silently rounded."""

    text: str


def _toml_amount(value: object) -> Decimal:
    if isinstance(value, _TomlFloat):
        raise PydanticCustomError(
            "toml_float", 'a TOML float is not exact; quote the number (e.g. "0.01")'
        )
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PydanticCustomError("amount_type", 'must be a decimal string (e.g. "0.01")')
    try:
        return parse_amount(value, allow_negative=False)
    except InvalidAmount as exc:
        raise PydanticCustomError("amount", str(exc)) from None


Amount = Annotated[Decimal, BeforeValidator(_toml_amount)]


def normalize_base_url(text: str) -> str:
    """``scheme://host[:port]`` (http or https, no path, query or credentials), or ValueError."""
    rule = "must be scheme://host[:port]"
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"{rule}: not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{rule} with scheme http or https")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{rule}: credentials in the URL are not allowed")
    if not parts.hostname:
        raise ValueError(f"{rule}: the host is missing")
    if parts.path not in ("", "/"):
        raise ValueError(f"{rule}: no path (each client appends its venue's documented path)")
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError(f"{rule}: no query or fragment")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def _base_url(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return normalize_base_url(value)
    except ValueError as exc:
        raise PydanticCustomError("base_url", str(exc)) from None


class _Model(BaseModel):
    """TOML tables: exact types, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class _PolicyModel(_Model):
    threshold_usd: Amount | None = None
    critical_usd: Amount | None = None
    tolerance: dict[str, Amount] = Field(default_factory=dict)


_BOOK_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    "file": frozenset({"path"}),
    "http": frozenset({"url"}),
    "sql": frozenset({"url", "query", "upsert"}),
}
_BOOK_REQUIRED: Final[Mapping[str, frozenset[str]]] = {
    "file": frozenset({"path"}),
    "http": frozenset({"url"}),
    "sql": frozenset({"url", "query"}),
}


class _BookModel(_Model):
    source: Literal["file", "http", "sql"]
    path: str | None = Field(default=None, validate_default=True)
    url: str | None = Field(default=None, validate_default=True)
    query: str | None = Field(default=None, validate_default=True)
    upsert: str | None = None

    @field_validator("path", "url", "query", "upsert")
    @classmethod
    def _fits_source(cls, value: str | None, info: ValidationInfo) -> str | None:
        source = info.data.get("source")
        name = info.field_name
        if source is None or name is None:
            return value
        if value is None:
            if name in _BOOK_REQUIRED[source]:
                raise PydanticCustomError("required", f"is required when source = {source!r}")
            return None
        if name not in _BOOK_FIELDS[source]:
            raise PydanticCustomError("unused", f"is not used when source = {source!r}")
        if not value.strip():
            raise PydanticCustomError("empty", "must not be empty")
        if name == "url" and source == "http":
            _check_http_url(value)
        if name == "url" and source == "sql":
            _check_sql_url(value)
        if name == "query" and ":account_id" not in value:
            raise PydanticCustomError("query", "must select by the :account_id parameter")
        return value


def _check_http_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError("url", "must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise PydanticCustomError("url", "credentials in the URL are not allowed")


def _check_sql_url(value: str) -> None:
    if value.startswith(("env:", "file:")):
        try:
            parse_secret_ref(value)
        except ConfigError as exc:
            raise PydanticCustomError("url", str(exc)) from None
        return
    if "://" not in value:
        raise PydanticCustomError("url", "must be a database URL, env:NAME or file:/path")
    if urlsplit(value).password is not None:
        raise PydanticCustomError(
            "url",
            "a literal password is not allowed; give the whole URL as env:NAME or file:/path",
        )


class _PricesModel(_Model):
    source: Literal["static", "coinbase"] = "static"
    base_url: str | None = None
    marks: dict[str, Amount] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _collect_marks(cls, data: Any) -> Any:
        """Every key but ``source`` and ``base_url`` is an asset's mark."""
        if not isinstance(data, dict):
            return data
        settings = {key: data[key] for key in ("source", "base_url") if key in data}
        marks = {key: value for key, value in data.items() if key not in settings}
        return {**settings, "marks": marks}

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("source") == "static":
            raise PydanticCustomError("unused", "is only used with source = 'coinbase'")
        return _base_url(value)


class _RateLimitModel(_Model):
    per_second: Amount = Field(gt=0)
    burst: int = Field(gt=0)


class _AccountModel(_Model):
    id: str
    exchange: str
    base_url: str | None = None
    api_key: str | None = Field(default=None, validate_default=True)
    api_secret: str | None = Field(default=None, validate_default=True)
    address: str | None = Field(default=None, validate_default=True)
    subaccount: int | None = Field(default=None, ge=0)
    asset_map: dict[str, str] = Field(default_factory=dict)
    rate_limit: _RateLimitModel | None = None

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ACCOUNT_ID.match(value):
            raise PydanticCustomError(
                "account_id", "must be 1-64 letters, digits, '.', '_' or '-' (no leading symbol)"
            )
        return value

    @field_validator("exchange")
    @classmethod
    def _check_exchange(cls, value: str) -> str:
        if value not in VENUES and not _CCXT_EXCHANGE.match(value):
            raise PydanticCustomError(
                "exchange",
                f"unknown exchange {value[:40]!r}; expected one of "
                + ", ".join(VENUES)
                + " or ccxt:<exchange id>",
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        return _base_url(value)

    @field_validator("api_key", "api_secret")
    @classmethod
    def _check_secret(cls, value: str | None, info: ValidationInfo) -> str | None:
        exchange = info.data.get("exchange")
        if value is None:
            if exchange in NEEDS_SECRETS:
                raise PydanticCustomError("required", f"is required for exchange {exchange!r}")
            return None
        if exchange in NO_SECRETS:
            raise PydanticCustomError(
                "unused", f"is not used by exchange {exchange!r}, which needs no secrets"
            )
        try:
            parse_secret_ref(value)
        except ConfigError as exc:
            raise PydanticCustomError("secret", str(exc)) from None
        return value

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str | None, info: ValidationInfo) -> str | None:
        exchange = info.data.get("exchange")
        if value is None:
            if exchange == "dydx":
                raise PydanticCustomError("required", "is required for exchange 'dydx'")
            return None
        if exchange in NO_ADDRESS:
            raise PydanticCustomError("unused", f"is not used by exchange {exchange!r}")
        if not value.strip():
            raise PydanticCustomError("empty", "must not be empty")
        return value

    @field_validator("subaccount")
    @classmethod
    def _check_subaccount(cls, value: int | None, info: ValidationInfo) -> int | None:
        exchange = info.data.get("exchange")
        if value is not None and exchange in NO_ADDRESS:
            raise PydanticCustomError("unused", f"is not used by exchange {exchange!r}")
        return value

    @field_validator("asset_map")
    @classmethod
    def _check_asset_map(cls, value: dict[str, str]) -> dict[str, str]:
        if any(not key.strip() or not code.strip() for key, code in value.items()):
            raise PydanticCustomError("asset_map", "asset codes must not be empty")
        return value


class _RosterModel(_Model):
    policy: _PolicyModel = Field(default_factory=_PolicyModel)
    book: _BookModel
    prices: _PricesModel = Field(default_factory=_PricesModel)
    accounts: list[_AccountModel]

    @field_validator("accounts")
    @classmethod
    def _at_least_one(cls, value: list[_AccountModel]) -> list[_AccountModel]:
        if not value:
            raise PydanticCustomError("accounts", "needs at least one [[accounts]] entry")
        return value


# --- error messages -------------------------------------------------------------------------

_GENERIC: Final[Mapping[str, str]] = {
    "missing": "is required",
    "extra_forbidden": "unknown key (check its spelling)",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "list_type": "must be an array of tables",
}


def _describe(exc: ValidationError, raw: Mapping[str, Any], path: Path) -> list[str]:
    """One line per problem: file, account and field, and the rule (never the value)."""
    lines: list[str] = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        message = _GENERIC.get(error["type"], error["msg"]).replace("Input should be", "must be")
        line = f"{_where(error['loc'], raw, path)}: {message}"
        if line not in lines:
            lines.append(line)
    return lines


def _where(loc: tuple[int | str, ...], raw: Mapping[str, Any], path: Path) -> str:
    parts = list(loc)
    where = str(path)
    if len(parts) >= 2 and parts[0] == "accounts" and isinstance(parts[1], int):
        where += f": {_account_label(raw, parts[1])}"
        parts = parts[2:]
    elif len(parts) >= 2 and parts[:2] == ["prices", "marks"]:
        parts = ["prices", *parts[2:]]  # the marks are the table's own keys
    if parts:
        where += f": field {'.'.join(str(part) for part in parts)!r}"
    return where


def _account_label(raw: Mapping[str, Any], index: int) -> str:
    accounts = raw.get("accounts")
    if isinstance(accounts, list) and index < len(accounts):
        entry = accounts[index]
        account_id = entry.get("id") if isinstance(entry, dict) else None
        if isinstance(account_id, str) and account_id:
            twins = sum(isinstance(e, dict) and e.get("id") == account_id for e in accounts)
            return f"account {account_id!r}" + (f" (accounts[{index}])" if twins > 1 else "")
    return f"accounts[{index}]"


def _duplicate_ids(raw: Mapping[str, Any], path: Path) -> list[str]:
    accounts = raw.get("accounts")
    if not isinstance(accounts, list):
        return []
    first_seen: dict[str, int] = {}
    problems: list[str] = []
    for index, entry in enumerate(accounts):
        account_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(account_id, str):
            continue
        if account_id in first_seen:
            problems.append(
                f"{path}: account {account_id!r}: field 'id': duplicate id"
                f" (accounts[{first_seen[account_id]}] and accounts[{index}])"
            )
        else:
            first_seen[account_id] = index
    return problems
