"""Kraken on the sandbox over real loopback HTTP: the KrakenClient against a SandboxServer."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from infra.sandbox import DATA_DIR, SandboxServer, ScenarioError, parse_scenario
from infra.sandbox.kraken import CallCounter
from infra.sandbox.scenario import KrakenAccount, KrakenRateLimit
from infra.venues.errors import (
    MalformedVenueResponse,
    VenueAuthError,
    VenueError,
    VenueRateLimited,
    VenueTimeout,
    VenueUnavailable,
)
from infra.venues.kraken import PROCESS_NONCES, KrakenClient, sign


def _secret() -> str:
    return base64.b64encode(secrets.token_bytes(64)).decode()


NAMES = ("main", "sig", "replay", "limited", "window", "ex", "json", "public")
KEYS = {name: f"kraken-test-{name}-" + secrets.token_urlsafe(24) for name in NAMES}
SECRETS = {name: _secret() for name in NAMES}
MAIN_BALANCES = [
    {"asset": "XXBT", "balance": "0.5", "hold_trade": "0.1"},
    {"asset": "XBT.M", "balance": "0.01"},
    {"asset": "ZUSD", "balance": "2500.1234"},
    {"asset": "XETH", "balance": "3.25"},
    {"asset": "ETH.F", "balance": "0.1"},
    {"asset": "XTZ", "balance": "12"},
    {"asset": "USDT", "balance": "0"},
]


def _kraken(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"kraken-{name}",
        "venue": "kraken",
        "api_key": KEYS[name],
        "api_secret": SECRETS[name],
        "balances": [{"asset": "XXBT", "balance": "1"}],
        **fields,
    }


SCENARIO = parse_scenario(
    {
        "prices": {"BTC": "60000", "ETH": "3000", "SOL": "150"},
        "accounts": [
            _kraken("main", balances=MAIN_BALANCES),
            _kraken("sig"),
            _kraken("replay"),
            _kraken("limited", rate_limit={"max_counter": 3, "decay_per_second": 0.01}),
            _kraken("ex", balances=MAIN_BALANCES[:3]),
            _kraken("json"),
            _kraken("public"),
        ],
    },
    source="kraken-test-scenario",
)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(SCENARIO) as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


def _client(
    http: httpx.Client, base_url: str, name: str, *, timeout: float = 5, **kwargs: Any
) -> KrakenClient:
    options: dict[str, Any] = {"api_key": KEYS[name], "api_secret": SECRETS[name]}
    options.update(kwargs)
    return KrakenClient(http, base_url=base_url, timeout=timeout, **options)


def _fetch_error(client: KrakenClient) -> VenueError:
    with pytest.raises(VenueError) as caught:
        client.fetch_balances()
    return caught.value


FAULTS: list[tuple[dict[str, Any], type[VenueError], float | None]] = [
    ({"kind": "status_5xx", "status": 500}, VenueUnavailable, None),
    ({"kind": "status_5xx", "status": 502, "variant": "html"}, VenueUnavailable, None),
    ({"kind": "rate_limit"}, VenueRateLimited, None),
    ({"kind": "rate_limit", "variant": "html", "retry_after_ms": 1500}, VenueRateLimited, 2.0),
    ({"kind": "auth"}, VenueAuthError, None),
    ({"kind": "malformed", "variant": "html"}, MalformedVenueResponse, None),
    ({"kind": "malformed", "variant": "truncated"}, MalformedVenueResponse, None),
    ({"kind": "malformed", "variant": "bad_amount"}, MalformedVenueResponse, None),
    ({"kind": "malformed", "variant": "negative"}, MalformedVenueResponse, None),
    ({"kind": "reset"}, VenueUnavailable, None),
]
FAULT_KEYS = {i: (f"kraken-fault-{i}-" + secrets.token_urlsafe(24), _secret()) for i in range(20)}


def _fault_account(index: int, *faults: dict[str, Any]) -> dict[str, Any]:
    api_key, secret = FAULT_KEYS[index]
    return {
        "id": f"kraken-fault-{index}",
        "venue": "kraken",
        "api_key": api_key,
        "api_secret": secret,
        "balances": [{"asset": "XXBT", "balance": "1"}],
        "faults": list(faults),
    }


def _fault_client(http: httpx.Client, base_url: str, index: int, **kwargs: Any) -> KrakenClient:
    api_key, secret = FAULT_KEYS[index]
    options: dict[str, Any] = {"timeout": 5, **kwargs}
    return KrakenClient(http, base_url=base_url, api_key=api_key, api_secret=secret, **options)


@pytest.fixture(scope="module")
def faulty() -> Iterator[SandboxServer]:
    """One server whose account #i suffers FAULTS[i] once; #19 gets two 503s."""
    accounts = [_fault_account(i, {**fault, "times": 1}) for i, (fault, _, _) in enumerate(FAULTS)]
    accounts.append(_fault_account(19, {"kind": "status_5xx", "status": 503, "times": 2}))
    with SandboxServer(parse_scenario({"accounts": accounts})) as running:
        yield running


# --- success ---------------------------------------------------------------------------------


def test_balances_come_back_canonical_and_exact(server: SandboxServer, http: httpx.Client) -> None:
    """Legacy ids map to BTC/USD/ETH, suffixes stay separate, XTZ stays, zero entries stay."""
    balances = _client(http, server.base_url, "main").fetch_balances()
    assert balances == {
        "BTC": Decimal("0.5"),
        "BTC.M": Decimal("0.01"),
        "USD": Decimal("2500.1234"),
        "ETH": Decimal("3.25"),
        "ETH.F": Decimal("0.1"),
        "XTZ": Decimal(12),
        "USDT": Decimal(0),
    }
    assert server.request_count("kraken-main") >= 1


def test_the_balance_body_uses_kraken_ids_and_decimal_strings(
    server: SandboxServer, http: httpx.Client
) -> None:
    """The raw body is {"error": [], "result": {id: string}} with 10 (crypto) or 4 (fiat) places."""
    nonce = 1_000_000_000_000
    postdata = f"nonce={nonce}"
    response = http.post(
        server.base_url + "/0/private/Balance",
        content=postdata,
        headers={
            "API-Key": KEYS["ex"],
            "API-Sign": sign("/0/private/Balance", nonce, postdata, SECRETS["ex"]),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status_code == 200
    assert response.json() == {
        "error": [],
        "result": {"XXBT": "0.5000000000", "XBT.M": "0.0100000000", "ZUSD": "2500.1234"},
    }


def test_balance_ex_gives_balance_and_hold_trade_as_strings(
    server: SandboxServer, http: httpx.Client
) -> None:
    """BalanceEx (what ccxt calls) answers {id: {balance, hold_trade}} with string amounts."""
    nonce = 2_000_000_000_000
    postdata = f"nonce={nonce}"
    response = http.post(
        server.base_url + "/0/private/BalanceEx",
        content=postdata,
        headers={
            "API-Key": KEYS["ex"],
            "API-Sign": sign("/0/private/BalanceEx", nonce, postdata, SECRETS["ex"]),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert response.json()["result"] == {
        "XXBT": {"balance": "0.5000000000", "hold_trade": "0.1000000000"},
        "XBT.M": {"balance": "0.0100000000", "hold_trade": "0.0000000000"},
        "ZUSD": {"balance": "2500.1234", "hold_trade": "0.0000"},
    }


def test_a_json_encoded_body_is_accepted_and_signed_over_its_exact_bytes(
    server: SandboxServer, http: httpx.Client
) -> None:
    """Kraken accepts application/json too; the signature covers the JSON text as sent."""
    nonce = 3_000_000_000_000
    postdata = json.dumps({"nonce": nonce})
    headers = {
        "API-Key": KEYS["json"],
        "API-Sign": sign("/0/private/Balance", nonce, postdata, SECRETS["json"]),
        "Content-Type": "application/json",
    }
    url = server.base_url + "/0/private/Balance"
    assert http.post(url, content=postdata, headers=headers).json() == {
        "error": [],
        "result": {"XXBT": "1.0000000000"},
    }
    spaced = json.dumps({"nonce": nonce + 1}, indent=1)
    headers["API-Sign"] = sign("/0/private/Balance", nonce + 1, postdata, SECRETS["json"])
    assert http.post(url, content=spaced, headers=headers).json() == {
        "error": ["EAPI:Invalid signature"]
    }


# --- auth --------------------------------------------------------------------------------------


def test_a_wrong_secret_is_an_invalid_signature(server: SandboxServer, http: httpx.Client) -> None:
    """Signing with another secret gets HTTP 200 EAPI:Invalid signature → VenueAuthError."""
    client = _client(http, server.base_url, "sig", api_secret=_secret())
    error = _fetch_error(client)
    assert isinstance(error, VenueAuthError)
    assert "EAPI:Invalid signature" in str(error)
    assert server.request_count("kraken-sig") == 0


def test_an_unknown_key_is_an_invalid_key(server: SandboxServer, http: httpx.Client) -> None:
    """An API-Key the scenario does not know gets EAPI:Invalid key → VenueAuthError."""
    error = _fetch_error(_client(http, server.base_url, "sig", api_key="not-a-known-key"))
    assert isinstance(error, VenueAuthError)
    assert "EAPI:Invalid key" in str(error)


def test_a_replayed_or_lower_nonce_is_an_invalid_nonce(
    server: SandboxServer, http: httpx.Client
) -> None:
    """The nonce must beat the key's last one: a replay or a lower value is EAPI:Invalid nonce."""
    nonces = iter([5_000_000_000_000, 5_000_000_000_000, 4_999_999_999_999, 5_000_000_000_001])
    client = _client(http, server.base_url, "replay", nonce=lambda: next(nonces))
    assert client.fetch_balances() == {"BTC": Decimal(1)}
    for _ in range(2):
        error = _fetch_error(client)
        assert isinstance(error, VenueAuthError)
        assert "EAPI:Invalid nonce" in str(error)
    assert client.fetch_balances() == {"BTC": Decimal(1)}


def test_an_unsigned_or_nonce_less_request_is_refused(
    server: SandboxServer, http: httpx.Client
) -> None:
    """No API-Sign is an invalid signature; no nonce in the body is an invalid nonce."""
    url = server.base_url + "/0/private/Balance"
    no_sign = http.post(url, content="nonce=9000000000000", headers={"API-Key": KEYS["sig"]})
    no_nonce = http.post(url, content="", headers={"API-Key": KEYS["sig"], "API-Sign": "AAAA"})
    assert (no_sign.status_code, no_sign.json()) == (200, {"error": ["EAPI:Invalid signature"]})
    assert (no_nonce.status_code, no_nonce.json()) == (200, {"error": ["EAPI:Invalid nonce"]})


# --- rate limits -------------------------------------------------------------------------------


def test_the_call_counter_refuses_sustained_calls_past_its_maximum(
    server: SandboxServer, http: httpx.Client
) -> None:
    """Max counter 3, slow decay: three calls pass, every further call is rate limited."""
    client = _client(http, server.base_url, "limited")
    for _ in range(3):
        assert client.fetch_balances() == {"BTC": Decimal(1)}
    for _ in range(5):
        error = _fetch_error(client)
        assert isinstance(error, VenueRateLimited)
        assert "EAPI:Rate limit exceeded" in str(error)
        assert error.retry_after is None
    assert server.request_count("kraken-limited") == 3


def test_a_fixed_window_limit_for_kraken_applies_per_key(http: httpx.Client) -> None:
    """[rate_limits.kraken] counts per API key: another key keeps its own budget."""
    scenario = parse_scenario(
        {
            "rate_limits": {"kraken": {"requests": 2, "window_ms": 60_000}},
            "accounts": [_kraken("window"), _kraken("main")],
        }
    )
    with SandboxServer(scenario) as running:
        window = _client(http, running.base_url, "window")
        window.fetch_balances()
        window.fetch_balances()
        assert isinstance(_fetch_error(window), VenueRateLimited)
        assert _client(http, running.base_url, "main").fetch_balances() == {"BTC": Decimal(1)}


def test_the_call_counter_decays_with_time() -> None:
    """After the counter decays by one call's cost, one more call passes (clock injected)."""
    now = [100.0]
    counter = CallCounter(clock=lambda: now[0])
    limit = KrakenRateLimit(max_counter=2, decay_per_second=0.5)
    assert [counter.hit("k", limit) for _ in range(3)] == [True, True, False]
    now[0] += 1.0  # 0.5 decayed: 1.5 + 1 > 2
    assert counter.hit("k", limit) is False
    now[0] += 1.0  # another 0.5: 1.0 + 1 ≤ 2
    assert counter.hit("k", limit) is True
    assert counter.level("k", limit) == pytest.approx(2.0)
    assert counter.hit("other", limit) is True
    counter.reset()
    assert counter.level("k", limit) == 0.0


# --- faults ------------------------------------------------------------------------------------


def test_faults_apply_for_their_times_then_the_venue_recovers(
    faulty: SandboxServer, http: httpx.Client
) -> None:
    """status_5xx times 2: two unavailable answers, then the balances."""
    faulty.reset()
    client = _fault_client(http, faulty.base_url, 19)
    for _ in range(2):
        assert isinstance(_fetch_error(client), VenueUnavailable)
    assert client.fetch_balances() == {"BTC": Decimal(1)}
    assert faulty.request_count("kraken-fault-19") == 3


@pytest.mark.parametrize(
    ("index", "expected", "retry_after"),
    [(i, expected, wait) for i, (_, expected, wait) in enumerate(FAULTS)],
    ids=[fault.get("variant", fault["kind"]) for fault, _, _ in FAULTS],
)
def test_each_fault_maps_to_its_client_error(
    faulty: SandboxServer,
    http: httpx.Client,
    index: int,
    expected: type[VenueError],
    retry_after: float | None,
) -> None:
    """Every injected fault reaches the client as the venue error DESIGN §3 assigns it."""
    faulty.reset()
    client = _fault_client(http, faulty.base_url, index)
    error = _fetch_error(client)
    assert type(error) is expected
    if isinstance(error, VenueRateLimited):
        assert error.retry_after == retry_after
    assert client.fetch_balances() == {"BTC": Decimal(1)}


def test_a_timeout_fault_outlasts_the_client_timeout(http: httpx.Client) -> None:
    """A hanging response becomes VenueTimeout at the client's timeout."""
    scenario = parse_scenario(
        {"accounts": [_fault_account(0, {"kind": "timeout", "times": 1, "seconds": 60})]}
    )
    with SandboxServer(scenario) as running:
        error = _fetch_error(_fault_client(http, running.base_url, 0, timeout=0.3))
        assert isinstance(error, VenueTimeout)


def test_the_html_rate_limit_fault_is_a_429_with_retry_after_in_seconds(
    faulty: SandboxServer, http: httpx.Client
) -> None:
    """The CDN variant is HTTP 429, HTML, Retry-After rounded up to whole seconds."""
    faulty.reset()
    api_key, secret = FAULT_KEYS[3]
    nonce = PROCESS_NONCES.next(api_key)  # the clients' sequence: later tests stay valid
    response = http.post(
        faulty.base_url + "/0/private/Balance",
        content=f"nonce={nonce}",
        headers={
            "API-Key": api_key,
            "API-Sign": sign("/0/private/Balance", nonce, f"nonce={nonce}", secret),
        },
    )
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert response.headers["content-type"].startswith("text/html")


# --- public routes -----------------------------------------------------------------------------


def test_assets_lists_ids_with_their_altnames(server: SandboxServer, http: httpx.Client) -> None:
    """/0/public/Assets keys are internal ids (XXBT) with Kraken's altname (XBT)."""
    result = http.get(server.base_url + "/0/public/Assets").json()["result"]
    assert result["XXBT"]["altname"] == "XBT"
    assert result["ZUSD"]["altname"] == "USD"
    assert result["XBT.M"]["altname"] == "XBT.M"
    assert result["XTZ"]["altname"] == "XTZ"
    assert result["ZUSD"]["decimals"] == 4
    assert result["XXBT"] == {
        "aclass": "currency",
        "altname": "XBT",
        "decimals": 10,
        "display_decimals": 5,
        "status": "enabled",
    }
    filtered = http.get(server.base_url + "/0/public/Assets", params={"asset": "XBT,ETH"})
    assert set(filtered.json()["result"]) == {"XXBT", "XETH"}
    unknown = http.get(server.base_url + "/0/public/Assets", params={"asset": "NOPE"})
    assert unknown.json() == {"error": ["EQuery:Unknown asset"]}


def test_asset_pairs_and_ticker_use_the_canonical_pair_name(
    server: SandboxServer, http: httpx.Client
) -> None:
    """Ticker?pair=XBTUSD answers under XXBTZUSD (not the altname asked for); c[0] is the price."""
    pairs = http.get(server.base_url + "/0/public/AssetPairs").json()["result"]
    assert set(pairs) == {"XXBTZUSD", "XETHZUSD", "SOLUSD"}
    assert (pairs["XXBTZUSD"]["base"], pairs["XXBTZUSD"]["quote"]) == ("XXBT", "ZUSD")
    assert pairs["XXBTZUSD"]["altname"] == "XBTUSD"
    ticker = http.get(server.base_url + "/0/public/Ticker", params={"pair": "XBTUSD"}).json()
    assert ticker["error"] == []
    assert list(ticker["result"]) == ["XXBTZUSD"]
    assert ticker["result"]["XXBTZUSD"]["c"][0] == "60000"
    unknown = http.get(server.base_url + "/0/public/Ticker", params={"pair": "FOOUSD"})
    assert unknown.json() == {"error": ["EQuery:Unknown asset pair"]}


# --- scenario ----------------------------------------------------------------------------------


def _parse_one(**fields: Any) -> KrakenAccount:
    scenario = parse_scenario({"accounts": [_kraken("main", **fields)]}, base_dir=DATA_DIR)
    account = scenario.accounts[0]
    assert isinstance(account, KrakenAccount)
    return account


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"api_secret": "not base64!"}, "must be a non-empty base64 secret"),
        ({"api_secret_file": "keys/kraken-main.secret"}, "exactly one"),
        ({"balances": [{"asset": "XXBT", "balance": "1", "hold_trade": "2"}]}, "must not exceed"),
        ({"balances": [{"asset": "xbt", "balance": "1"}]}, "upper-case Kraken asset id"),
        ({"balances": [{"asset": "XXBT", "balance": "-1"}]}, "not a valid unsigned amount"),
        ({"balances": [{"asset": "XXBT", "balance": "1"}] * 2}, "duplicate asset"),
        ({"rate_limit": {"max_counter": 0, "decay_per_second": 1}}, "between 1 and 10000"),
        ({"rate_limit": {"max_counter": 5, "decay_per_second": 0}}, "exclusive of 0"),
        ({"rate_limit": {"max_counter": 5}}, "'decay_per_second' is missing"),
        ({"api_key": "has space"}, "printable text without spaces"),
    ],
)
def test_invalid_kraken_accounts_are_refused(fields: dict[str, Any], problem: str) -> None:
    """The scenario refuses bad Kraken accounts, naming the field and never the secret."""
    with pytest.raises(ScenarioError) as caught:
        _parse_one(**fields)
    assert problem in str(caught.value)
    assert SECRETS["main"] not in str(caught.value)


def test_duplicate_api_keys_are_refused_without_showing_the_key() -> None:
    """Two accounts with one api_key are refused; the message shows a fingerprint, not the key."""
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({"accounts": [_kraken("main"), {**_kraken("main"), "id": "other"}]})
    assert "duplicate credential" in str(caught.value)
    assert KEYS["main"] not in str(caught.value)


def test_the_secret_is_read_from_a_file_and_hidden_from_repr() -> None:
    """api_secret_file reads the demo secret (64 bytes of base64); repr() never shows it."""
    fields = _kraken("main")
    del fields["api_secret"]
    fields["api_secret_file"] = "keys/kraken-main.secret"
    scenario = parse_scenario({"accounts": [fields]}, base_dir=DATA_DIR)
    account = scenario.accounts[0]
    assert isinstance(account, KrakenAccount)
    assert len(base64.b64decode(account.api_secret, validate=True)) == 64
    assert account.api_secret not in repr(account)


def test_the_demo_credentials_are_a_usable_key_pair(http: httpx.Client) -> None:
    """keys/kraken-main.key and .secret sign requests the sandbox accepts."""
    api_key = (DATA_DIR / "keys" / "kraken-main.key").read_text().strip()
    secret = (DATA_DIR / "keys" / "kraken-main.secret").read_text()
    scenario = parse_scenario(
        {
            "accounts": [
                {
                    "id": "kraken-demo",
                    "venue": "kraken",
                    "api_key": api_key,
                    "api_secret_file": "keys/kraken-main.secret",
                    "balances": [{"asset": "ZEUR", "balance": "10"}],
                }
            ]
        },
        base_dir=DATA_DIR,
    )
    with SandboxServer(scenario) as running:
        client = KrakenClient(
            http, base_url=running.base_url, api_key=api_key, api_secret=secret, timeout=5
        )
        assert client.fetch_balances() == {"EUR": Decimal(10)}
