"""Bench scenarios: N accounts on V venue endpoints, A assets each, latency L, seeded findings.

:func:`generate` turns a :class:`ScenarioSpec` into a :class:`GeneratedScenario`: one sandbox
scenario per venue endpoint (each served by its own :class:`~infra.sandbox.SandboxServer`, so
an endpoint is also its own client-IP rate-limit scope), the accounts file (TOML roster) that
points every account at its endpoint, and the book (JSON). Accounts are spread round-robin over
the endpoints, and the endpoints round-robin over the venue kinds (10 endpoints of the four
kinds: 3 coinbase, 3 dydx, 2 kraken, 2 binance).

Some accounts carry a seeded finding, so the cycle does real comparison work (and confirms
those breaks with a second fetch) and its result can be checked: every ``mismatch_every``-th
account's first asset is 2 % short in the book (1 000 USD: WARNING), every
``missing_every``-th account's last asset is absent from the book (20 000 USD: CRITICAL).
Every other account agrees with its book exactly (SUCCESS).

Venue kinds plug in through :data:`VENUE_KINDS`: a :class:`VenueKind` says how an account is
written in the sandbox scenario and in the roster, which secrets files it needs, how many
requests one account costs, and the venue's published rate limit and its scope (DESIGN §3).
Every Coinbase account gets its own key name (the sandbox refuses a key name twice) signed by
the sandbox's demo key pair; every Kraken and Binance account its own API key, signed with the
sandbox's demo secret.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from bench.floor import EndpointLoad, FixedWindow, Floor, cycle_floor
from infra.sandbox import DATA_DIR

Scope = Literal["key", "ip"]

#: The sandbox's demo Coinbase key pair, shared by every generated Coinbase account.
DEMO_PRIVATE_KEY: Final = DATA_DIR / "keys" / "cb-main.pem"
DEMO_PUBLIC_KEY: Final = DATA_DIR / "keys" / "cb-main.pub.pem"
#: Every generated asset's USD mark.
ASSET_PRICE: Final = "10"
#: A mismatch: the venue holds 5000, the book 4900 (100 units = 1 000 USD, 2 %: WARNING).
MISMATCH_VENUE: Final = "5000"
MISMATCH_BOOK: Final = "4900"
#: A missing asset: 2000 units on the venue, none in the book (20 000 USD: CRITICAL).
MISSING_VENUE: Final = "2000"
#: The roster ``rate_limit`` of accounts on an endpoint without limits (sweep, smoke).
UNLIMITED_TIER: Final[Mapping[str, Any]] = {"per_second": "1000000", "burst": 1_000_000}
#: The policy of every generated roster (the DESIGN §2 example).
POLICY: Final[Mapping[str, Any]] = {
    "threshold_usd": "100",
    "critical_usd": "10000",
    "tolerance": {"default": "0.00000001"},
}


@dataclass(frozen=True, slots=True)
class AccountSeed:
    """One generated venue account: its id, its endpoint and its holdings on the venue."""

    account_id: str
    endpoint: str
    number: int  # its position on its endpoint (0, 1, …)
    holdings: Mapping[str, str]  # asset → decimal string: what the venue reports


@dataclass(frozen=True, slots=True)
class VenueKind:
    """How one venue kind's accounts are generated (see the module docstring)."""

    name: str
    #: What its published limit counts: each API key apart, or every request of a client IP.
    scope: Scope
    #: The published limit as a sandbox fixed window (reference file), for rate-limited runs.
    published_limit: FixedWindow
    #: Balance entries per response; an account with more costs several requests.
    page_size: int
    scenario_account: Callable[[AccountSeed], dict[str, Any]]
    roster_account: Callable[[AccountSeed, str], dict[str, Any]]
    #: Files (relative to the roster's folder) the roster's secret references read.
    secret_files: Callable[[AccountSeed], dict[str, str]] = field(default=lambda _seed: {})
    #: Whether the sandbox enforces ``published_limit`` as its fixed window
    #: (``[rate_limits.<venue>]``); otherwise ``account_limit`` says how it limits each account.
    sandbox_window: bool = True
    #: Per-account limit fields of the sandbox scenario (Kraken's decaying counter).
    account_limit: Mapping[str, Any] = field(default_factory=dict)

    def requests_per_account(self, assets: int) -> int:
        """Requests one account of ``assets`` balances costs per cycle."""
        return max(1, math.ceil(assets / self.page_size))


# --- coinbase -----------------------------------------------------------------------------------


def coinbase_key_name(seed: AccountSeed) -> str:
    """The CDP key name of a generated Coinbase account (one key per account)."""
    return f"organizations/recon-bench/apiKeys/{seed.account_id}"


def _coinbase_scenario(seed: AccountSeed) -> dict[str, Any]:
    return {
        "id": seed.account_id,
        "venue": "coinbase",
        "key_name": coinbase_key_name(seed),
        "public_key_file": str(DEMO_PUBLIC_KEY),
        "balances": [
            {"currency": asset, "available": amount, "hold": "0"}
            for asset, amount in seed.holdings.items()
        ],
    }


def _coinbase_roster(seed: AccountSeed, base_url: str) -> dict[str, Any]:
    return {
        "id": seed.account_id,
        "exchange": "coinbase",
        "base_url": base_url,
        "api_key": f"file:keys/{seed.account_id}.name",
        "api_secret": f"file:{DEMO_PRIVATE_KEY}",
    }


def _coinbase_secrets(seed: AccountSeed) -> dict[str, str]:
    return {f"keys/{seed.account_id}.name": coinbase_key_name(seed) + "\n"}


COINBASE: Final = VenueKind(
    name="coinbase",
    scope="key",
    published_limit=FixedWindow(requests=30, window_s=1.0),  # 30 req/s per key (private)
    page_size=250,  # the client asks for 250 accounts per page, the API's maximum
    scenario_account=_coinbase_scenario,
    roster_account=_coinbase_roster,
    secret_files=_coinbase_secrets,
)


# --- dydx ---------------------------------------------------------------------------------------


def dydx_address(endpoint: str) -> str:
    """The (alphanumeric) dYdX address of an endpoint's generated subaccounts."""
    return "dydx1bench" + "".join(c for c in endpoint if c.isalnum())


def _dydx_scenario(seed: AccountSeed) -> dict[str, Any]:
    return {
        "id": seed.account_id,
        "venue": "dydx",
        "address": dydx_address(seed.endpoint),
        "subaccount": seed.number,
        "assets": [
            {"symbol": asset, "side": "LONG", "size": amount}
            for asset, amount in seed.holdings.items()
        ],
    }


def _dydx_roster(seed: AccountSeed, base_url: str) -> dict[str, Any]:
    return {
        "id": seed.account_id,
        "exchange": "dydx",
        "base_url": base_url,
        "address": dydx_address(seed.endpoint),
        "subaccount": seed.number,
    }


DYDX: Final = VenueKind(
    name="dydx",
    scope="ip",
    published_limit=FixedWindow(requests=100, window_s=10.0),  # 100 GETs per 10 s per IP
    page_size=1_000_000,  # one response holds every position
    scenario_account=_dydx_scenario,
    roster_account=_dydx_roster,
)


# --- kraken -------------------------------------------------------------------------------------

#: The sandbox's demo secrets: every generated Kraken (Binance) account signs with the same
#: secret under its own API key.
KRAKEN_SECRET: Final = DATA_DIR / "keys" / "kraken-main.secret"
BINANCE_SECRET: Final = DATA_DIR / "keys" / "binance-main.secret"


def bench_api_key(seed: AccountSeed) -> str:
    """The API key of a generated Kraken or Binance account (one key per account)."""
    return f"bench-{seed.account_id}"


def _kraken_scenario(seed: AccountSeed) -> dict[str, Any]:
    return {
        "id": seed.account_id,
        "venue": "kraken",
        "api_key": bench_api_key(seed),
        "api_secret_file": str(KRAKEN_SECRET),
        "balances": [
            {"asset": asset, "balance": amount} for asset, amount in seed.holdings.items()
        ],
    }


def _keyed_roster(exchange: str, secret: Path) -> Callable[[AccountSeed, str], dict[str, Any]]:
    def roster(seed: AccountSeed, base_url: str) -> dict[str, Any]:
        return {
            "id": seed.account_id,
            "exchange": exchange,
            "base_url": base_url,
            "api_key": f"file:keys/{seed.account_id}.key",
            "api_secret": f"file:{secret}",
        }

    return roster


def _key_file(seed: AccountSeed) -> dict[str, str]:
    return {f"keys/{seed.account_id}.key": bench_api_key(seed) + "\n"}


KRAKEN: Final = VenueKind(
    name="kraken",
    scope="key",
    # Kraken's per-key counter at the Starter tier: 15, decaying 0.33 a second (a Balance
    # call adds 1). The sandbox keeps that counter per account; for the floor, 15 calls per
    # 15 / 0.33 s bound it from below (one or two calls per key per cycle never reach it).
    published_limit=FixedWindow(requests=15, window_s=15 / 0.33),
    page_size=1_000_000,  # one response holds every balance
    scenario_account=_kraken_scenario,
    roster_account=_keyed_roster("kraken", KRAKEN_SECRET),
    secret_files=_key_file,
    sandbox_window=False,
    account_limit={"rate_limit": {"max_counter": 15, "decay_per_second": 0.33}},
)


# --- binance ------------------------------------------------------------------------------------


def _binance_scenario(seed: AccountSeed) -> dict[str, Any]:
    return {
        "id": seed.account_id,
        "venue": "binance",
        "api_key": bench_api_key(seed),
        "api_secret_file": str(BINANCE_SECRET),
        "balances": [
            {"asset": asset, "free": amount, "locked": "0"}
            for asset, amount in seed.holdings.items()
        ],
    }


BINANCE: Final = VenueKind(
    name="binance",
    scope="ip",
    # 6,000 request weight a minute per IP; the account call weighs 20: 300 calls a minute.
    published_limit=FixedWindow(requests=300, window_s=60.0),
    page_size=1_000_000,
    scenario_account=_binance_scenario,
    roster_account=_keyed_roster("binance", BINANCE_SECRET),
    secret_files=_key_file,
)

#: Venue kinds by name; a new venue adds its kind here.
VENUE_KINDS: Final[dict[str, VenueKind]] = {
    kind.name: kind for kind in (COINBASE, DYDX, KRAKEN, BINANCE)
}


# --- scenarios ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """The shape of a bench scenario."""

    name: str
    accounts: int
    endpoints: int
    assets: int
    latency_ms: int
    rate_limited: bool = False
    kinds: tuple[str, ...] = ("coinbase", "dydx", "kraken", "binance")
    mismatch_every: int = 10
    missing_every: int = 25
    seed: int = 20261124

    def __post_init__(self) -> None:
        if self.accounts < 1 or self.endpoints < 1 or self.assets < 1 or self.latency_ms < 0:
            raise ValueError("a scenario needs accounts, endpoints and assets (latency ≥ 0)")
        unknown = [k for k in self.kinds if k not in VENUE_KINDS]
        if not self.kinds or unknown:
            raise ValueError(f"unknown venue kind(s) {unknown}; known: {sorted(VENUE_KINDS)}")


#: Issue 6's S1 (a desk) and S2 (a fund, the venues' published limits), S2's shape without
#: limits (the granularity sweep), and a tiny one for the smoke test.
S1: Final = ScenarioSpec("S1", accounts=50, endpoints=5, assets=20, latency_ms=200)
S2: Final = ScenarioSpec(
    "S2", accounts=1000, endpoints=10, assets=50, latency_ms=100, rate_limited=True
)
S2_UNLIMITED: Final = ScenarioSpec(
    "S2-nolimit", accounts=1000, endpoints=10, assets=50, latency_ms=100
)
SMOKE: Final = ScenarioSpec(
    "smoke", accounts=8, endpoints=4, assets=3, latency_ms=20, mismatch_every=3, missing_every=5
)


@dataclass(frozen=True, slots=True)
class EndpointPlan:
    """One venue endpoint of a scenario: its kind, accounts, latency and limit."""

    name: str
    kind: VenueKind
    accounts: tuple[AccountSeed, ...]
    latency_ms: int
    limit: FixedWindow | None
    assets: int

    def scenario_data(self) -> dict[str, Any]:
        """The endpoint's sandbox scenario, as the TOML file's data."""
        accounts = [self.kind.scenario_account(seed) for seed in self.accounts]
        if self.limit is not None and not self.kind.sandbox_window:
            accounts = [{**account, **self.kind.account_limit} for account in accounts]
        data: dict[str, Any] = {
            "latency_ms": self.latency_ms,
            "prices": {},
            "accounts": accounts,
        }
        if self.limit is not None and self.kind.sandbox_window:
            window_ms = round(self.limit.window_s * 1000)
            data["rate_limits"] = {
                self.kind.name: {"requests": self.limit.requests, "window_ms": window_ms}
            }
        return data

    def load(self, flagged: Collection[str] = ()) -> EndpointLoad:
        """What the endpoint must serve per cycle (for the floor): every account in the fetch
        round, the ``flagged`` ones again in the confirming re-fetch."""
        per_account = self.kind.requests_per_account(self.assets)
        again = [per_account if s.account_id in flagged else 0 for s in self.accounts]
        if self.kind.scope == "key":
            scopes = tuple(per_account for _ in self.accounts)
            confirm = tuple(again)
        else:
            scopes = (per_account * len(self.accounts),)
            confirm = (sum(again),)
        return EndpointLoad(self.name, self.latency_ms / 1000, scopes, self.limit, confirm)


@dataclass(frozen=True, slots=True)
class GeneratedScenario:
    """A scenario's endpoints, book, prices and the status each account must get."""

    spec: ScenarioSpec
    endpoints: tuple[EndpointPlan, ...]
    book: Mapping[str, Mapping[str, str]]
    prices: Mapping[str, str]
    expected: Mapping[str, str]  # account id → report status

    @property
    def account_ids(self) -> list[str]:
        return sorted(self.expected)

    @property
    def flagged(self) -> set[str]:
        """The accounts whose breaks the cycle confirms (WARNING or worse)."""
        return {a for a, status in self.expected.items() if status != "SUCCESS"}

    def loads(self) -> list[EndpointLoad]:
        """Every endpoint's load: the fetch round and the confirming re-fetch."""
        flagged = self.flagged
        return [endpoint.load(flagged) for endpoint in self.endpoints]

    def floor(self, confirm_delay_s: float) -> Floor:
        """The cycle's physical floor (see :mod:`bench.floor`)."""
        return cycle_floor(self.loads(), confirm_delay_s)

    def write_scenarios(self, folder: Path) -> dict[str, Path]:
        """Write each endpoint's sandbox scenario TOML; endpoint name → file."""
        folder.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for endpoint in self.endpoints:
            path = folder / f"scenario-{endpoint.name}.toml"
            path.write_text(to_toml(endpoint.scenario_data()), encoding="utf-8")
            paths[endpoint.name] = path
        return paths

    def write_roster(self, folder: Path, base_urls: Mapping[str, str]) -> Path:
        """Write the book (``book.json``), the key-name files and the roster
        (``accounts.toml``) pointing each account at ``base_urls[endpoint]``; the roster."""
        folder.mkdir(parents=True, exist_ok=True)
        book = {"as_of": "2026-11-24T00:00:00Z", "accounts": self.book}
        (folder / "book.json").write_text(json.dumps(book, indent=1), encoding="utf-8")
        accounts: list[dict[str, Any]] = []
        for endpoint in self.endpoints:
            for seed in endpoint.accounts:
                for relative, content in endpoint.kind.secret_files(seed).items():
                    secret = folder / relative
                    secret.parent.mkdir(parents=True, exist_ok=True)
                    secret.write_text(content, encoding="utf-8")
                account = endpoint.kind.roster_account(seed, base_urls[endpoint.name])
                if endpoint.limit is None:
                    # The sandbox enforces no limit here: say so in the account's tier, or
                    # recon would pace itself at the venue's published limit all the same.
                    account["rate_limit"] = dict(UNLIMITED_TIER)
                accounts.append(account)
        roster = {
            "policy": dict(POLICY),
            "book": {"source": "file", "path": "book.json"},
            "prices": dict(self.prices),
            "accounts": accounts,
        }
        path = folder / "accounts.toml"
        path.write_text(to_toml(roster), encoding="utf-8")
        return path


def _amount(rng: random.Random) -> str:
    """A positive decimal string with 8 fractional digits (exact; no float involved)."""
    return f"{rng.randint(1, 99_999)}.{rng.randint(0, 99_999_999):08d}"


def asset_codes(count: int) -> list[str]:
    """``A00``, ``A01``, …: the generated asset codes."""
    width = max(2, len(str(count - 1)))
    return [f"A{i:0{width}d}" for i in range(count)]


def generate(spec: ScenarioSpec) -> GeneratedScenario:
    """The scenario of ``spec`` (deterministic for a given seed)."""
    rng = random.Random(spec.seed)  # noqa: S311 - test data, not secrets
    assets = asset_codes(spec.assets)
    kinds = [VENUE_KINDS[spec.kinds[e % len(spec.kinds)]] for e in range(spec.endpoints)]
    names = [f"{kind.name}-{e}" for e, kind in enumerate(kinds)]
    seeds: list[list[AccountSeed]] = [[] for _ in range(spec.endpoints)]
    book: dict[str, dict[str, str]] = {}
    expected: dict[str, str] = {}
    for index in range(spec.accounts):
        e = index % spec.endpoints
        number = len(seeds[e])
        account_id = f"{names[e]}-{number:04d}"
        venue = {asset: _amount(rng) for asset in assets}
        local = dict(venue)
        status = "SUCCESS"
        missing = (index + 1) % spec.missing_every == 0
        mismatch = (index + 1) % spec.mismatch_every == 0 and not (missing and len(assets) == 1)
        if mismatch:
            venue[assets[0]] = MISMATCH_VENUE
            local[assets[0]] = MISMATCH_BOOK
            status = "WARNING"
        if missing:
            venue[assets[-1]] = MISSING_VENUE
            del local[assets[-1]]
            status = "CRITICAL"
        seeds[e].append(AccountSeed(account_id, names[e], number, venue))
        book[account_id] = local
        expected[account_id] = status
    endpoints = tuple(
        EndpointPlan(
            name=names[e],
            kind=kinds[e],
            accounts=tuple(seeds[e]),
            latency_ms=spec.latency_ms,
            limit=kinds[e].published_limit if spec.rate_limited else None,
            assets=spec.assets,
        )
        for e in range(spec.endpoints)
    )
    prices = dict.fromkeys(assets, ASSET_PRICE)
    return GeneratedScenario(spec, endpoints, book, prices, expected)


# --- a minimal TOML writer (the stdlib reads TOML but does not write it) ----------------------


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)  # a rate (Kraken's decay), never an amount: amounts are strings
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def _toml_table(data: Mapping[str, Any], prefix: str, *, inline_arrays: bool = False) -> list[str]:
    """Lines of one table: its scalars, then its sub-tables; arrays of tables become
    ``[[name]]`` sections at the top level only (inline tables below it)."""

    def section_array(value: object) -> bool:
        return not inline_arrays and _is_table_array(value)

    lines = [
        f"{_toml_key(k)} = {_toml_value(v)}"
        for k, v in data.items()
        if not isinstance(v, Mapping) and not section_array(v)
    ]
    for key, value in data.items():
        name = f"{prefix}{_toml_key(key)}"
        if isinstance(value, Mapping):
            lines += ["", f"[{name}]", *_toml_table(value, name + ".", inline_arrays=True)]
        elif section_array(value):
            for item in value:
                lines += ["", f"[[{name}]]", *_toml_table(item, name + ".", inline_arrays=True)]
    return lines


def to_toml(data: Mapping[str, Any]) -> str:
    """``data`` as TOML: scalars, tables, arrays of tables and arrays of inline tables."""
    return "\n".join(_toml_table(data, "")).lstrip("\n") + "\n"
