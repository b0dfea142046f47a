"""Binance on the sandbox over real loopback HTTP: a SandboxServer, BinanceClient and raw httpx."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.sandbox import DATA_DIR, SandboxServer, ScenarioError, parse_scenario
from infra.venues.binance import BinanceClient, WeightGuard, sign
from infra.venues.errors import (
    MalformedVenueResponse,
    VenueAuthError,
    VenueError,
    VenueRateLimited,
    VenueTimeout,
    VenueUnavailable,
)
from infra.venues.retry import RetryPolicy, call_with_retry

ACCOUNT = "/api/v3/account"
WEIGHT = "X-MBX-USED-WEIGHT-1M"
KEYS = {
    name: f"{name}Key0123456789abcdefABCDEF0123456789abcdefABCDEF0123456789ab"
    for name in ("main", "other", "faulty")
}
SECRETS = {name: f"{name}Secret9876543210zyxwvuZYXWVU9876543210zyxwvuZYXWVU98765" for name in KEYS}


def _binance(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"bn-{name}",
        "venue": "binance",
        "api_key": KEYS[name],
        "api_secret": SECRETS[name],
        "balances": [{"asset": "BTC", "free": "1"}],
        **fields,
    }


MAIN_BALANCES = [
    {"asset": "BTC", "free": "0.5", "locked": "0.1"},
    {"asset": "USDT", "free": "1250"},
    {"asset": "ETH", "free": "0", "locked": "0"},
    {"asset": "SOL", "free": "0.000000001", "locked": "2"},
]
SCENARIO = parse_scenario(
    {
        "prices": {"BTC": "60000", "ETH": "3000.5"},
        "accounts": [
            _binance("main", balances=MAIN_BALANCES, uid=354937868),
            _binance("other", balances=[]),
        ],
    },
    source="binance-test",
)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(SCENARIO) as running:
        yield running


@pytest.fixture
def http(server: SandboxServer) -> Iterator[httpx.Client]:
    server.reset()
    with httpx.Client(base_url=server.base_url, timeout=5) as client:
        yield client


def binance_client(
    http: httpx.Client, server: SandboxServer, name: str = "main", **options: Any
) -> BinanceClient:
    settings: dict[str, Any] = {
        "base_url": server.base_url,
        "api_key": KEYS[name],
        "api_secret": SECRETS[name],
        "timeout": 5,
        "weight_guard": WeightGuard(),
        **options,
    }
    return BinanceClient(http, **settings)


def signed_get(
    http: httpx.Client,
    query: str,
    *,
    name: str = "main",
    secret: str | None = None,
    upper: bool = False,
) -> httpx.Response:
    """GET /api/v3/account with ``query`` signed as given (raw, not through the client)."""
    signature = sign(query, secret or SECRETS[name])
    signature = signature.upper() if upper else signature
    return http.get(
        f"{ACCOUNT}?{query}&signature={signature}", headers={"X-MBX-APIKEY": KEYS[name]}
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def with_faults(*faults: dict[str, Any]) -> SandboxServer:
    return SandboxServer(parse_scenario({"accounts": [_binance("faulty", faults=list(faults))]}))


# ---------------------------------------------------------------- success


def test_client_reads_free_plus_locked_per_asset(http: httpx.Client, server: SandboxServer) -> None:
    """The client's signed request passes every check and totals free + locked, zeros omitted."""
    totals = binance_client(http, server).fetch_balances()
    assert totals == {
        "BTC": Decimal("0.6"),
        "USDT": Decimal("1250"),
        "SOL": Decimal("2.000000001"),
    }
    assert server.request_count("bn-main") == 1


def test_account_body_has_the_documented_shape(http: httpx.Client) -> None:
    """Every documented field is present; amounts are strings with 8 decimals where they fit."""
    response = signed_get(http, f"recvWindow=5000&timestamp={now_ms()}")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "makerCommission", "takerCommission", "buyerCommission", "sellerCommission",
        "commissionRates", "canTrade", "canWithdraw", "canDeposit", "brokered",
        "requireSelfTradePrevention", "preventSor", "updateTime", "accountType", "balances",
        "permissions", "uid",
    }  # fmt: skip
    assert (body["accountType"], body["permissions"], body["uid"]) == ("SPOT", ["SPOT"], 354937868)
    assert isinstance(body["updateTime"], int)
    balances = {b["asset"]: b for b in body["balances"]}
    assert balances["BTC"] == {"asset": "BTC", "free": "0.50000000", "locked": "0.10000000"}
    assert balances["SOL"]["free"] == "0.000000001"
    # Without omitZeroBalances Binance lists zero assets too (the scenario's, and others).
    assert balances["ETH"] == {"asset": "ETH", "free": "0.00000000", "locked": "0.00000000"}
    assert balances["BNB"]["free"] == "0.00000000"


def test_omit_zero_balances_is_honoured(http: httpx.Client) -> None:
    """omitZeroBalances=true drops every all-zero asset."""
    response = signed_get(http, f"omitZeroBalances=true&timestamp={now_ms()}")
    assert [b["asset"] for b in response.json()["balances"]] == ["BTC", "USDT", "SOL"]


def test_signature_hex_is_case_insensitive(http: httpx.Client) -> None:
    """An upper-case hex signature is accepted (HMAC signatures are case-insensitive)."""
    assert signed_get(http, f"timestamp={now_ms()}", upper=True).status_code == 200


def test_microsecond_timestamps_and_fractional_recv_window_are_accepted(
    http: httpx.Client,
) -> None:
    """timestamp may count microseconds; recvWindow may carry up to three decimals."""
    query = f"recvWindow=5000.125&timestamp={now_ms() * 1000}"
    assert signed_get(http, query).status_code == 200


# ---------------------------------------------------------------- auth and timing errors


def test_bad_signature_is_400_code_1022(http: httpx.Client, server: SandboxServer) -> None:
    """A signature under the wrong secret is refused with -1022; the client calls it auth."""
    response = signed_get(http, f"timestamp={now_ms()}", secret="wrong")
    assert (response.status_code, response.json()["code"]) == (400, -1022)
    with pytest.raises(VenueAuthError, match=r"HTTP 400, code -1022"):
        binance_client(http, server, api_secret="not-the-secret").fetch_balances()
    assert server.request_count("bn-main") == 0


def test_a_parameter_changed_after_signing_fails_the_signature(http: httpx.Client) -> None:
    """The HMAC covers the exact received query: altering any byte after signing fails it."""
    query = f"omitZeroBalances=true&timestamp={now_ms()}"
    signature = sign(query, SECRETS["main"])
    tampered = query.replace("true", "false")
    response = http.get(
        f"{ACCOUNT}?{tampered}&signature={signature}", headers={"X-MBX-APIKEY": KEYS["main"]}
    )
    assert response.json()["code"] == -1022


@pytest.mark.parametrize(
    ("offset_s", "recv_window_ms", "message"),
    [
        (-10.0, 5000, "outside of the recvWindow"),
        (+2.0, 5000, "ahead of the server's time"),
    ],
)
def test_stale_or_future_timestamp_is_400_code_1021(
    http: httpx.Client, server: SandboxServer, offset_s: float, recv_window_ms: int, message: str
) -> None:
    """timestamp must satisfy ts < serverTime + 1000 and serverTime − ts ≤ recvWindow."""
    response = signed_get(
        http, f"recvWindow={recv_window_ms}&timestamp={now_ms() + int(offset_s * 1000)}"
    )
    assert response.status_code == 400
    assert response.json() == {"code": -1021, "msg": response.json()["msg"]}
    assert message in response.json()["msg"]
    client = binance_client(http, server, clock=lambda: time.time() + offset_s)
    with pytest.raises(VenueUnavailable, match=r"code -1021.*check the host clock"):
        client.fetch_balances()


def test_a_wider_recv_window_tolerates_a_slow_clock(
    http: httpx.Client, server: SandboxServer
) -> None:
    """A client 10 s behind passes with recv_window_ms = 60000."""
    client = binance_client(http, server, clock=lambda: time.time() - 10, recv_window_ms=60_000)
    assert client.fetch_balances()["BTC"] == Decimal("0.6")


def test_unknown_or_missing_api_key(http: httpx.Client, server: SandboxServer) -> None:
    """An unknown key is 401 -2015, a missing one 401 -2014: both auth errors for the client."""
    client = binance_client(http, server, api_key="unknownKey")
    with pytest.raises(VenueAuthError, match=r"HTTP 401, code -2015"):
        client.fetch_balances()
    missing = http.get(f"{ACCOUNT}?timestamp={now_ms()}&signature=00")
    assert (missing.status_code, missing.json()["code"]) == (401, -2014)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("recvWindow=5000", -1102),  # no timestamp
        ("timestamp=12ab", -1100),
        ("timestamp={now}&recvWindow=60001", -1131),
        ("timestamp={now}&omitZeroBalances=maybe", -1130),
        ("timestamp={now}&timestamp={now}", -1101),
    ],
)
def test_bad_parameters_are_400_with_binance_codes(
    http: httpx.Client, query: str, code: int
) -> None:
    """Missing, illegal, out-of-range or repeated parameters get Binance's -11xx codes."""
    response = signed_get(http, query.format(now=now_ms()))
    assert (response.status_code, response.json()["code"]) == (400, code)


# ---------------------------------------------------------------- weight and rate limits


def test_every_response_carries_the_used_weight_of_the_ip() -> None:
    """Account calls weigh 20 each, errors included, ticker 2; the client's guard records it."""
    with SandboxServer(SCENARIO) as server, httpx.Client(base_url=server.base_url) as http:
        guard = WeightGuard()
        client = binance_client(http, server, weight_guard=guard)
        client.fetch_balances()
        assert guard.used == 20
        client.fetch_balances()
        assert guard.used == 40
        refused = http.get(
            f"{ACCOUNT}?timestamp=1&signature=00", headers={"X-MBX-APIKEY": "nobody"}
        )
        assert (refused.status_code, refused.headers[WEIGHT]) == (401, "60")
        ticker = http.get("/api/v3/ticker/price", params={"symbol": "BTCUSDT"})
        assert ticker.headers[WEIGHT] == "62"
        assert http.get("/api/v3/ping").headers[WEIGHT] == "63"


def _limited(requests: int) -> SandboxServer:
    scenario = parse_scenario(
        {
            "rate_limits": {"binance": {"requests": requests, "window_ms": 60_000}},
            "accounts": [_binance("main", balances=MAIN_BALANCES)],
        }
    )
    return SandboxServer(scenario)


def test_over_the_limit_429_then_418_for_continuing_then_reset() -> None:
    """Past the IP's limit: 429 + Retry-After seconds (-1003), then 418 for continuing."""
    with _limited(2) as server, httpx.Client(base_url=server.base_url, timeout=5) as http:
        first = binance_client(http, server)
        first.fetch_balances()
        first.fetch_balances()
        with pytest.raises(VenueRateLimited, match=r"HTTP 429, code -1003") as limited:
            first.fetch_balances()
        assert limited.value.retry_after is not None
        assert 0 < limited.value.retry_after <= 60
        # The same client now waits out Retry-After locally, without a request.
        with pytest.raises(VenueRateLimited, match="waiting out"):
            first.fetch_balances()
        # Another process on the same IP, unaware of the 429, earns the ban.
        with pytest.raises(VenueRateLimited, match=r"IP banned .*HTTP 418, code -1003") as ban:
            binance_client(http, server).fetch_balances()
        assert ban.value.retry_after is not None
        assert 0 < ban.value.retry_after <= 60
        raw = signed_get(http, f"timestamp={now_ms()}")
        assert raw.status_code == 418
        assert raw.headers["Retry-After"].isdigit()
        assert raw.headers[WEIGHT] == "40"
        assert server.request_count("bn-main") == 2
        server.reset()
        assert binance_client(http, server).fetch_balances()["USDT"] == Decimal("1250")
        assert server.request_count("bn-main") == 1


def test_guard_slows_the_client_before_the_sandbox_limit() -> None:
    """With the guard's budget matching the IP's limit, the client waits instead of a 429."""
    slept: list[float] = []
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        offset[0] += seconds

    with _limited(3) as server, httpx.Client(base_url=server.base_url, timeout=5) as http:
        guard = WeightGuard(40, clock=clock, sleep=sleep)
        client = binance_client(http, server, weight_guard=guard)
        client.fetch_balances()
        client.fetch_balances()
        assert slept == []
        assert guard.used == 40
        client.fetch_balances()  # the guard sleeps into the next minute first
        assert len(slept) == 1
        assert 0 < slept[0] <= 60
        assert server.request_count("bn-main") == 3


def test_public_routes_ticker_exchange_info_time() -> None:
    """ticker/price, exchangeInfo and time answer with Binance's shapes and weights."""
    with SandboxServer(SCENARIO) as server, httpx.Client(base_url=server.base_url) as http:
        one = http.get("/api/v3/ticker/price", params={"symbol": "BTCUSDT"})
        assert one.json() == {"symbol": "BTCUSDT", "price": "60000.00000000"}
        assert one.headers[WEIGHT] == "2"
        everything = http.get("/api/v3/ticker/price").json()
        assert {"symbol": "ETHUSDC", "price": "3000.50000000"} in everything
        some = http.get("/api/v3/ticker/price", params={"symbols": '["BTCUSDT","ETHUSDT"]'})
        assert [row["symbol"] for row in some.json()] == ["BTCUSDT", "ETHUSDT"]
        unknown = http.get("/api/v3/ticker/price", params={"symbol": "DOGEUSDT"})
        assert (unknown.status_code, unknown.json()["code"]) == (400, -1121)
        info = http.get("/api/v3/exchangeInfo", params={"symbol": "BTCUSDT"}).json()
        assert info["timezone"] == "UTC"
        (symbol,) = info["symbols"]
        assert (symbol["baseAsset"], symbol["quoteAsset"], symbol["status"]) == (
            "BTC",
            "USDT",
            "TRADING",
        )
        assert {f["filterType"] for f in symbol["filters"]} >= {"PRICE_FILTER", "LOT_SIZE"}
        assert any(r["rateLimitType"] == "REQUEST_WEIGHT" for r in info["rateLimits"])
        server_time = http.get("/api/v3/time").json()["serverTime"]
        assert abs(server_time - now_ms()) < 5000


# ---------------------------------------------------------------- faults


def test_fault_times_fail_then_pass_and_retry_recovers() -> None:
    """``times = 2`` 503s fail the first two requests; the retry loop then succeeds."""
    with (
        with_faults({"kind": "status_5xx", "status": 503, "times": 2}) as server,
        httpx.Client(timeout=5) as http,
    ):
        client = binance_client(http, server, "faulty")
        with pytest.raises(VenueUnavailable, match=r"HTTP 503, code -1001"):
            client.fetch_balances()
        slept: list[float] = []
        assert call_with_retry(client.fetch_balances, RetryPolicy(), sleep=slept.append) == {
            "BTC": Decimal("1")
        }
        assert slept == [0.1]
        assert server.request_count("bn-faulty") == 3


#: Fault rules applied in order (one request each) and the error each must surface as.
FAULT_SEQUENCE: list[tuple[dict[str, Any], type[VenueError], str]] = [
    ({"kind": "status_5xx", "status": 502, "variant": "html"}, VenueUnavailable, "HTTP 502"),
    ({"kind": "rate_limit", "retry_after_ms": 1500}, VenueRateLimited, "HTTP 429, code -1003"),
    ({"kind": "rate_limit", "variant": "html"}, VenueRateLimited, "HTTP 429"),
    ({"kind": "auth"}, VenueAuthError, "HTTP 401, code -2015"),
    ({"kind": "malformed", "variant": "html"}, MalformedVenueResponse, "not valid JSON"),
    ({"kind": "malformed", "variant": "truncated"}, MalformedVenueResponse, "not valid JSON"),
    ({"kind": "malformed", "variant": "bad_amount"}, MalformedVenueResponse, "not finite"),
    ({"kind": "malformed", "variant": "negative"}, MalformedVenueResponse, "balances[0].free"),
    ({"kind": "reset"}, VenueUnavailable, "connection failed"),
]


def test_each_fault_reaches_the_client_as_its_venue_error() -> None:
    """Every fault kind surfaces as the documented exception, in rule order; then success."""
    faults = [{**fault, "times": 1} for fault, _, _ in FAULT_SEQUENCE]
    with with_faults(*faults) as server, httpx.Client(timeout=5) as http:
        for fault, error_type, fragment in FAULT_SEQUENCE:
            # A fresh guard each time: a 429 fault must not block the next rule's request.
            with pytest.raises(error_type) as info:
                binance_client(http, server, "faulty").fetch_balances()
            assert fragment in str(info.value), fault
            if fault.get("retry_after_ms") == 1500:
                assert isinstance(info.value, VenueRateLimited)
                assert info.value.retry_after == 2.0  # 1500 ms, sent as whole seconds
        assert binance_client(http, server, "faulty").fetch_balances() == {"BTC": Decimal("1")}
        assert server.request_count("bn-faulty") == len(FAULT_SEQUENCE) + 1


def test_timeout_fault_is_a_client_timeout() -> None:
    """A hanging response outlasts the client's timeout: VenueTimeout, and the server stops."""
    with (
        with_faults({"kind": "timeout", "times": 1, "seconds": 60}) as server,
        httpx.Client() as http,
        pytest.raises(VenueTimeout),
    ):
        binance_client(http, server, "faulty", timeout=0.3).fetch_balances()


# ---------------------------------------------------------------- scenario and demo keys


def test_demo_key_files_sign_against_a_scenario_using_them(tmp_path: Path) -> None:
    """The sandbox-only demo key and secret files work end to end (secret read from a file)."""
    keys = DATA_DIR / "keys"
    api_key = (keys / "binance-main.key").read_text().strip()
    secret = (keys / "binance-main.secret").read_text().strip()
    scenario = parse_scenario(
        {
            "accounts": [
                {
                    "id": "binance-main",
                    "venue": "binance",
                    "api_key": api_key,
                    "api_secret_file": "keys/binance-main.secret",
                    "balances": [{"asset": "BNB", "free": "3", "locked": "0.5"}],
                }
            ]
        },
        base_dir=DATA_DIR,
    )
    with SandboxServer(scenario) as server, httpx.Client() as http:
        client = BinanceClient(
            http,
            base_url=server.base_url,
            api_key=api_key,
            api_secret=secret,
            timeout=5,
            weight_guard=WeightGuard(),
        )
        assert client.fetch_balances() == {"BNB": Decimal("3.5")}


@pytest.mark.parametrize(
    ("accounts", "expected"),
    [
        ([_binance("main"), _binance("other", api_key=KEYS["main"])], "duplicate credential"),
        ([_binance("main", api_secret="has space")], "field 'api_secret' must be printable"),
        (
            [_binance("main", balances=[{"asset": "BTC", "free": "-1"}])],
            "field 'free' is not a valid unsigned amount",
        ),
        (
            [
                _binance(
                    "main", balances=[{"asset": "BTC", "free": "1"}, {"asset": "BTC", "free": "2"}]
                )
            ],
            "duplicate asset 'BTC'",
        ),
    ],
)
def test_invalid_binance_scenarios_never_echo_credentials(
    accounts: list[dict[str, Any]], expected: str
) -> None:
    """Bad Binance accounts are refused by field; neither key nor secret appears in the message."""
    with pytest.raises(ScenarioError) as info:
        parse_scenario({"accounts": accounts}, source="s.toml")
    message = str(info.value)
    assert expected in message
    assert KEYS["main"] not in message
    assert SECRETS["main"] not in message
    assert json.dumps(SECRETS["main"]) not in message
