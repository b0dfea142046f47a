"""Binance Spot client (/api/v3/account) and its weight guard, against httpx.MockTransport."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from infra.venues.binance import (
    ACCOUNT_WEIGHT,
    BinanceClient,
    BinanceKeyError,
    WeightGuard,
    shared_weight_guard,
    sign,
    used_weight,
)
from infra.venues.errors import (
    MalformedVenueResponse,
    TransientVenueError,
    VenueAuthError,
    VenueConfigError,
    VenueError,
    VenueRateLimited,
    VenueTimeout,
    VenueUnavailable,
)
from infra.venues.retry import RetryPolicy

API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
#: 12:00:10 into some minute (the guard's windows are wall-clock minutes).
NOW = 1_700_000_410.25
Handler = Callable[[httpx.Request], httpx.Response]


# --- fakes -------------------------------------------------------------------------------------


class FakeTime:
    """A clock and a sleep that advances it, recording every sleep."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def account_body(balances: list[dict[str, Any]]) -> bytes:
    """A /api/v3/account body of the documented shape around ``balances``."""
    return json.dumps(
        {
            "makerCommission": 10,
            "takerCommission": 10,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": "0.00100000",
                "taker": "0.00100000",
                "buyer": "0.00000000",
                "seller": "0.00000000",
            },
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": 1730000000000,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": 354937868,
        }
    ).encode()


def raw_account(balances_json: str) -> bytes:
    """A body whose ``balances`` is given as raw JSON text (for JSON numbers and constants)."""
    return b'{"accountType": "SPOT", "balances": ' + balances_json.encode() + b', "uid": 1}'


def entry(asset: str, free: Any, locked: Any = "0.00000000") -> dict[str, Any]:
    return {"asset": asset, "free": free, "locked": locked}


class Venue:
    """A fake /api/v3/account: one response per request (the last repeats), all recorded."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]


def ok(body: bytes, weight: int | None = None, **headers: str) -> httpx.Response:
    if weight is not None:
        headers["X-MBX-USED-WEIGHT-1M"] = str(weight)
    return httpx.Response(200, content=body, headers=headers)


def respond(status: int, body: bytes = b"", **headers: str) -> httpx.Response:
    return httpx.Response(status, content=body, headers=headers)


def error_json(code: int, msg: str = "message") -> bytes:
    return json.dumps({"code": code, "msg": msg}).encode()


def make_client(
    http: httpx.Client, time_: FakeTime | None = None, guard: WeightGuard | None = None, **kw: Any
) -> BinanceClient:
    fake = time_ or FakeTime()
    return BinanceClient(
        http,
        api_key=API_KEY,
        api_secret=SECRET,
        timeout=10,
        clock=fake.clock,
        weight_guard=guard or WeightGuard(clock=fake.clock, sleep=fake.sleep),
        **kw,
    )


def fetch(handler: Handler, time_: FakeTime | None = None, **kw: Any) -> dict[str, Decimal]:
    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        return make_client(http, time_, **kw).fetch_balances()


def fail(handler: Handler, **kw: Any) -> VenueError:
    with pytest.raises(VenueError) as info:
        fetch(handler, **kw)
    return info.value


# --- request and totals ------------------------------------------------------------------------


def test_signed_request_has_the_documented_query_header_and_signature_last() -> None:
    """GET /api/v3/account?omitZeroBalances=true&recvWindow=5000&timestamp=<ms>&signature=<hex>."""
    venue = Venue(ok(account_body([entry("BTC", "0.5", "0.1")])))
    fetch(venue)
    (request,) = venue.requests
    assert request.method == "GET"
    assert request.url.path == "/api/v3/account"
    assert request.url.host == "api.binance.com"
    query = request.url.query.decode()
    signed = "omitZeroBalances=true&recvWindow=5000&timestamp=1700000410250"
    assert query == f"{signed}&signature={sign(signed, SECRET)}"
    assert request.headers["X-MBX-APIKEY"] == API_KEY
    assert SECRET not in str(request.url)
    assert SECRET not in str(request.headers)


def test_recv_window_and_base_url_are_configurable() -> None:
    """recv_window_ms goes into the signed query; base_url replaces the host."""
    venue = Venue(ok(account_body([])))
    fetch(venue, recv_window_ms=60_000, base_url="http://127.0.0.1:9/")
    (request,) = venue.requests
    assert str(request.url).startswith("http://127.0.0.1:9/api/v3/account?")
    assert b"recvWindow=60000&" in request.url.query


def test_total_is_free_plus_locked_per_asset() -> None:
    """Each asset's total is free + locked, exactly, from the documented string amounts."""
    body = account_body([entry("BTC", "0.50000000", "0.10000000"), entry("USDT", "1250.00000000")])
    assert fetch(Venue(ok(body))) == {"BTC": Decimal("0.6"), "USDT": Decimal("1250")}


def test_json_numbers_are_parsed_exactly() -> None:
    """Amounts sent as JSON numbers are read exactly (never through float)."""
    body = raw_account(
        '[{"asset": "ETH", "free": 0.1, "locked": 0.2}, '
        '{"asset": "SHIB", "free": 123456789012345678, "locked": 0}]'
    )
    totals = fetch(Venue(ok(body)))
    assert totals == {"ETH": Decimal("0.3"), "SHIB": Decimal("123456789012345678")}
    assert str(totals["ETH"]) == "0.3"


def test_duplicate_assets_are_summed() -> None:
    """Two entries of one asset add up (the venue should not send them, but nothing is lost)."""
    body = account_body([entry("BTC", "1", "0.5"), entry("ETH", "2"), entry("BTC", "0.25", "0")])
    assert fetch(Venue(ok(body))) == {"BTC": Decimal("1.75"), "ETH": Decimal("2")}


def test_zero_totals_are_dropped_like_omit_zero_balances() -> None:
    """All-zero entries (and -0) are dropped, so the result does not depend on the flag."""
    body = account_body(
        [
            entry("BTC", "0.00000000", "0.00000000"),
            entry("BNB", "-0.00000000", "0"),
            entry("ETH", "0", "0.00000001"),
            entry("LTC", "0E-8", "0"),
        ]
    )
    assert fetch(Venue(ok(body))) == {"ETH": Decimal("0.00000001")}


def test_empty_balances_is_an_empty_account() -> None:
    """A successful body with no balances is an account holding nothing (not an error)."""
    assert fetch(Venue(ok(account_body([])))) == {}


# --- errors ------------------------------------------------------------------------------------


HTML = b"<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>"


@pytest.mark.parametrize(
    ("response", "error_type", "fragment"),
    [
        (respond(400, error_json(-1022)), VenueAuthError, "HTTP 400, code -1022"),
        (respond(401, error_json(-2014)), VenueAuthError, "HTTP 401, code -2014"),
        (respond(401, error_json(-2015)), VenueAuthError, "HTTP 401, code -2015"),
        (respond(400, error_json(-2015)), VenueAuthError, "code -2015"),
        (respond(401, b"Unauthorized"), VenueAuthError, "HTTP 401"),
        (respond(403, HTML), VenueAuthError, "firewall (HTTP 403)"),
        (respond(400, error_json(-1021)), VenueUnavailable, "recvWindow (HTTP 400, code -1021)"),
        (respond(500, error_json(-1001)), VenueUnavailable, "HTTP 500, code -1001"),
        (respond(502, HTML), VenueUnavailable, "HTTP 502"),
        (respond(503, b""), VenueUnavailable, "HTTP 503"),
        (respond(504, error_json(-1021)), VenueUnavailable, "unavailable (HTTP 504"),
        (respond(400, error_json(-1102)), VenueConfigError, "HTTP 400, code -1102"),
        (respond(404, HTML), VenueConfigError, "HTTP 404"),
        (respond(408, b""), VenueTimeout, "HTTP 408"),
        (respond(301, b"", Location="https://x.test/"), VenueConfigError, "redirect"),
    ],
)
def test_status_and_binance_codes_map_to_the_error_tree(
    response: httpx.Response, error_type: type[VenueError], fragment: str
) -> None:
    """Each status / Binance code lands on its documented exception, named by status and code."""
    error = fail(Venue(response))
    assert type(error) is error_type
    assert fragment in str(error)


def test_clock_skew_is_transient_and_says_to_check_the_clock() -> None:
    """-1021 is retried (each attempt is re-stamped) and its message points at the host clock."""
    error = fail(Venue(respond(400, error_json(-1021))))
    assert isinstance(error, TransientVenueError)
    assert "check the host clock" in str(error)
    assert RetryPolicy().delay_before_retry(1, error) == 0.1


@pytest.mark.parametrize(
    ("response", "retry_after", "fragment"),
    [
        (respond(429, error_json(-1003), **{"Retry-After": "7"}), 7.0, "HTTP 429, code -1003"),
        (respond(418, error_json(-1003), **{"Retry-After": "120"}), 120.0, "IP banned"),
        (respond(429, HTML), None, "rate limited (HTTP 429)"),
        (respond(400, error_json(-1003), **{"Retry-After": "3"}), 3.0, "code -1003"),
        (respond(429, b"", **{"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), None, "HTTP 429"),
    ],
)
def test_429_418_and_code_1003_are_rate_limited_with_retry_after_in_seconds(
    response: httpx.Response, retry_after: float | None, fragment: str
) -> None:
    """429, 418 and -1003 are VenueRateLimited; Retry-After counts seconds (dates ignored)."""
    error = fail(Venue(response))
    assert isinstance(error, VenueRateLimited)
    assert error.retry_after == retry_after
    assert fragment in str(error)


def test_retry_policy_waits_a_short_429_but_gives_up_on_an_ip_ban() -> None:
    """A 429's seconds are waited; a 418 ban of minutes exceeds the max wait: give up the cycle."""
    short = fail(Venue(respond(429, error_json(-1003), **{"Retry-After": "2"})))
    ban = fail(Venue(respond(418, error_json(-1003), **{"Retry-After": "120"})))
    assert RetryPolicy().delay_before_retry(1, short) == 2.0
    assert RetryPolicy().delay_before_retry(1, ban) is None


@pytest.mark.parametrize(
    ("transport_error", "error_type"),
    [
        (httpx.ConnectError, VenueUnavailable),
        (httpx.RemoteProtocolError, VenueUnavailable),
        (httpx.ReadTimeout, VenueTimeout),
        (httpx.ConnectTimeout, VenueTimeout),
    ],
)
def test_transport_failures_map_to_transient_errors(
    transport_error: type[httpx.TransportError], error_type: type[VenueError]
) -> None:
    """Refused/reset connections are unavailable; timeouts are timeouts."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise transport_error("simulated", request=request)

    assert type(fail(handler)) is error_type


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (HTML, "not valid JSON"),
        (account_body([entry("BTC", "1")])[:40], "not valid JSON"),
        (b"[]", "body is an array"),
        (b'{"accountType": "SPOT"}', "balances is missing"),
        (b'{"balances": {"BTC": "1"}}', "balances is an object"),
        (raw_account('["BTC"]'), "balances[0] is a string"),
        (raw_account('[{"free": "1", "locked": "0"}]'), "balances[0].asset is missing"),
        (raw_account('[{"asset": "", "free": "1", "locked": "0"}]'), "balances[0].asset is empty"),
        (raw_account('[{"asset": "BTC", "locked": "0"}]'), "balances[0].free is missing"),
        (raw_account('[{"asset": "BTC", "free": "1"}]'), "balances[0].locked is missing"),
        (raw_account('[{"asset": "BTC", "free": "-1.5", "locked": "0"}]'), "free is not a valid"),
        (raw_account('[{"asset": "BTC", "free": "1", "locked": "-0.1"}]'), "locked is not a valid"),
        (raw_account('[{"asset": "BTC", "free": -1, "locked": 0}]'), "free is not a valid"),
        (raw_account('[{"asset": "BTC", "free": "NaN", "locked": "0"}]'), "not finite"),
        (raw_account('[{"asset": "BTC", "free": "Infinity", "locked": "0"}]'), "not finite"),
        (raw_account('[{"asset": "BTC", "free": "1e400", "locked": "0"}]'), "out of range"),
        (raw_account('[{"asset": "BTC", "free": 1e400, "locked": 0}]'), "out of range"),
        (raw_account('[{"asset": "BTC", "free": NaN, "locked": 0}]'), "non-finite number"),
        (raw_account('[{"asset": "BTC", "free": "1 BTC", "locked": "0"}]'), "not a decimal"),
        (raw_account('[{"asset": "BTC", "free": true, "locked": "0"}]'), "is a boolean"),
        (raw_account('[{"asset": "BTC", "free": null, "locked": "0"}]'), "is null"),
        (raw_account('[{"asset": 7, "free": "1", "locked": "0"}]'), "asset is a number"),
        (raw_account('[{"asset": "BTC", "free": "1", "free": "2", "locked": "0"}]'), "duplicate"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, field: str) -> None:
    """HTML, truncated JSON, wrong types, negative or non-finite amounts are malformed."""
    error = fail(Venue(ok(body)))
    assert isinstance(error, MalformedVenueResponse)
    assert field in str(error)


AMOUNTS = ("987654.321", "555444.333")


def _leaky_responses() -> list[httpx.Response]:
    """Failures whose bodies carry distinctive amounts and echo the credentials."""
    a, b = AMOUNTS
    echo = json.dumps({"code": -1022, "msg": f"{API_KEY} {SECRET} signature of {a} {b}"}).encode()
    return [
        ok(raw_account(f'[{{"asset": "BTC", "free": "{a}", "locked": "-{b}"}}]')),
        ok(raw_account(f'[{{"asset": "BTC", "free": "{a}x", "locked": "0"}}]')),
        ok(raw_account(f'[{{"asset": "BTC", "free": {a}, "locked": NaN}}]')),
        ok(f'{{"balances": [{{"asset": "BTC", "free": "{a}'.encode()),
        ok(f"<html>{a} {b} {API_KEY}</html>".encode()),
        respond(400, echo),
        respond(401, echo),
        respond(403, echo),
        respond(429, echo, **{"Retry-After": "5"}),
        respond(418, echo),
        respond(400, json.dumps({"code": -1100, "msg": f"{a}"}).encode()),
        respond(500, echo),
        respond(400, json.dumps({"code": float(b), "msg": a}).encode()),
    ]


@pytest.mark.parametrize("response", _leaky_responses())
def test_messages_never_contain_amounts_msg_text_or_credentials(response: httpx.Response) -> None:
    """No error message repeats an amount, Binance's msg text, the API key or the secret."""
    error = fail(Venue(response))
    text = f"{error} {error!r}"
    for amount in AMOUNTS:
        assert amount not in text
        assert amount.split(".")[0] not in text
    assert API_KEY[:12] not in text
    assert SECRET[:12] not in text
    assert "signature of" not in text


@pytest.mark.parametrize(
    ("options", "error_type"),
    [
        ({"api_key": ""}, BinanceKeyError),
        ({"api_key": "has space"}, BinanceKeyError),
        ({"api_secret": ""}, BinanceKeyError),
        ({"api_secret": SECRET + "\n"}, BinanceKeyError),
        ({"recv_window_ms": 0}, ValueError),
        ({"recv_window_ms": 60_001}, ValueError),
        ({"recv_window_ms": True}, ValueError),
    ],
)
def test_constructor_refuses_bad_credentials_and_recv_window(
    options: dict[str, Any], error_type: type[Exception]
) -> None:
    """Unusable credentials or recvWindow fail at construction, without showing the secret."""
    settings: dict[str, Any] = {"api_key": API_KEY, "api_secret": SECRET, **options}
    with httpx.Client() as http, pytest.raises(error_type) as info:
        BinanceClient(http, timeout=1, weight_guard=WeightGuard(), **settings)
    assert SECRET[:12] not in str(info.value)


# --- used weight and the guard ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20", 20),
        (" 1180 ", 1180),
        ("0", 0),
        ("", None),
        ("-5", None),
        ("1.5", None),
        ("12abc", None),
        ("9" * 10, None),
        (None, None),
    ],
)
def test_used_weight_header_parsing(value: str | None, expected: int | None) -> None:
    """X-MBX-USED-WEIGHT-1M is a plain non-negative integer; anything else is ignored."""
    headers = httpx.Headers({} if value is None else {"X-MBX-USED-WEIGHT-1M": value})
    assert used_weight(headers) == expected


def test_used_weight_header_is_recorded_from_every_response() -> None:
    """The guard takes the venue's count from successes and from errors alike."""
    fake = FakeTime()
    guard = WeightGuard(clock=fake.clock, sleep=fake.sleep)
    venue = Venue(
        ok(account_body([]), weight=340),
        respond(503, b"", **{"X-MBX-USED-WEIGHT-1M": "700"}),
    )
    with httpx.Client(transport=httpx.MockTransport(venue)) as http:
        client = make_client(http, fake, guard)
        client.fetch_balances()
        assert guard.used == 340
        with pytest.raises(VenueUnavailable):
            client.fetch_balances()
    assert guard.used == 700


def test_guard_sleeps_into_the_next_minute_before_exceeding_the_limit() -> None:
    """Used weight + 20 over the limit: the client sleeps until the minute rolls, then sends
    a freshly stamped request (no 429 provoked)."""
    fake = FakeTime()
    guard = WeightGuard(1200, clock=fake.clock, sleep=fake.sleep)
    venue = Venue(ok(account_body([]), weight=1190), ok(account_body([]), weight=20))
    with httpx.Client(transport=httpx.MockTransport(venue)) as http:
        client = make_client(http, fake, guard)
        client.fetch_balances()
        assert fake.sleeps == []
        client.fetch_balances()
    assert fake.sleeps == [pytest.approx(49.75)]  # 12:00:10.25 → 12:01:00
    stamps = [int(r.url.params["timestamp"]) for r in venue.requests]
    assert stamps == [1_700_000_410_250, 1_700_000_460_000]
    assert guard.used == 20


def test_guard_counts_its_own_reservations_without_headers() -> None:
    """Without any header, 60 calls of weight 20 fit in 1200; the 61st waits for the minute."""
    fake = FakeTime(1_700_000_400.0)
    guard = WeightGuard(1200, clock=fake.clock, sleep=fake.sleep)
    for _ in range(60):
        guard.acquire(ACCOUNT_WEIGHT)
    assert fake.sleeps == []
    assert guard.used == 1200
    guard.acquire(ACCOUNT_WEIGHT)
    assert fake.sleeps == [60.0]
    assert guard.used == 20


def test_a_report_from_an_earlier_minute_is_ignored() -> None:
    """A header for a request sent in the previous window does not fill the new one."""
    fake = FakeTime()
    guard = WeightGuard(1200, clock=fake.clock, sleep=fake.sleep)
    window = guard.acquire(ACCOUNT_WEIGHT)
    fake.now += 60
    guard.record(1190, window)
    assert guard.used == 0
    guard.record(500, guard.acquire(ACCOUNT_WEIGHT))
    assert guard.used == 500


def test_header_lower_than_local_reservations_keeps_the_larger_count() -> None:
    """The used weight is the larger of this process's reservations and the venue's count."""
    fake = FakeTime()
    guard = WeightGuard(1200, clock=fake.clock, sleep=fake.sleep)
    windows = [guard.acquire(ACCOUNT_WEIGHT) for _ in range(5)]
    guard.record(20, windows[0])
    assert guard.used == 100


def test_after_a_429_the_guard_refuses_locally_until_retry_after_passes() -> None:
    """A 429's Retry-After blocks every client of the base_url without touching the venue."""
    fake = FakeTime()
    guard = WeightGuard(clock=fake.clock, sleep=fake.sleep)
    venue = Venue(
        respond(429, error_json(-1003), **{"Retry-After": "5"}), ok(account_body([entry("A", "1")]))
    )
    with httpx.Client(transport=httpx.MockTransport(venue)) as http:
        first, second = make_client(http, fake, guard), make_client(http, fake, guard)
        with pytest.raises(VenueRateLimited):
            first.fetch_balances()
        fake.now += 2
        with pytest.raises(VenueRateLimited) as info:
            second.fetch_balances()
        assert info.value.retry_after == pytest.approx(3.0)
        assert len(venue.requests) == 1
        fake.now += 3
        assert second.fetch_balances() == {"A": Decimal("1")}
    assert fake.sleeps == []


def test_a_429_without_retry_after_blocks_until_the_next_minute() -> None:
    """With no Retry-After the guard waits out the current weight window."""
    fake = FakeTime()
    guard = WeightGuard(clock=fake.clock, sleep=fake.sleep)
    with pytest.raises(VenueRateLimited):
        fetch(Venue(respond(429, HTML)), fake, guard=guard)
    with pytest.raises(VenueRateLimited) as info:
        guard.acquire(ACCOUNT_WEIGHT)
    assert info.value.retry_after == pytest.approx(49.75)


def test_shared_guard_is_one_per_base_url() -> None:
    """Clients of one base_url share one budget (Binance counts per IP); others do not."""
    one = shared_weight_guard("https://binance-test-a.invalid")
    assert shared_weight_guard("https://BINANCE-TEST-A.invalid/") is one
    assert shared_weight_guard("https://binance-test-b.invalid") is not one
    with httpx.Client() as http:
        client = BinanceClient(
            http,
            base_url="https://binance-test-a.invalid",
            api_key=API_KEY,
            api_secret=SECRET,
            timeout=1,
        )
    assert client._guard is one


def test_guard_is_thread_safe() -> None:
    """Concurrent reservations are all counted, none lost."""
    fake = FakeTime()
    guard = WeightGuard(1_000_000, clock=fake.clock, sleep=fake.sleep)
    threads = [
        threading.Thread(target=lambda: [guard.acquire(ACCOUNT_WEIGHT) for _ in range(100)])
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert guard.used == 8 * 100 * ACCOUNT_WEIGHT
    assert fake.sleeps == []


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
def test_guard_limit_must_be_a_positive_integer(limit: Any) -> None:
    """A zero, negative or non-integer budget is refused."""
    with pytest.raises(ValueError):
        WeightGuard(limit)


def test_a_request_heavier_than_the_whole_limit_is_refused() -> None:
    """A weight that can never fit would sleep forever: refused, at construction already."""
    with pytest.raises(ValueError):
        WeightGuard(10).acquire(ACCOUNT_WEIGHT)
    with httpx.Client() as http, pytest.raises(ValueError, match="at least 20"):
        BinanceClient(
            http, api_key=API_KEY, api_secret=SECRET, timeout=1, weight_guard=WeightGuard(19)
        )
