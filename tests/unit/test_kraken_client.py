"""Kraken Balance client against httpx.MockTransport: request, error array, body and code table."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import threading
import urllib.parse
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from infra.venues.errors import (
    MalformedVenueResponse,
    VenueAuthError,
    VenueConfigError,
    VenueError,
    VenueRateLimited,
    VenueTimeout,
    VenueUnavailable,
)
from infra.venues.kraken import BALANCE_PATH, KrakenClient, KrakenKeyError, error_for
from infra.venues.kraken_assets import LEGACY_CODES, canonical_asset

API_KEY = "kraken-test-public-key+/="
SECRET = base64.b64encode(b"s3cr3t-bytes-for-the-kraken-unit-tests-0123456789abcdef").decode()
NOW = 1_700_000_000.0
Handler = Callable[[httpx.Request], httpx.Response]


def body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def ok(result: Any) -> bytes:
    return body({"error": [], "result": result})


def respond(content: bytes, status: int = 200, **headers: str) -> Handler:
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers=headers)

    return handler


class Recorder:
    """A fake Balance endpoint that records every request and answers one fixed body."""

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, content=self.content)


def fetch(handler: Handler, **kwargs: Any) -> dict[str, Decimal]:
    options: dict[str, Any] = {
        "api_key": API_KEY,
        "api_secret": SECRET,
        "timeout": 5,
        "nonce": lambda: 1_700_000_000_123,
        "clock": lambda: NOW,
    }
    options.update(kwargs)
    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        return KrakenClient(http, **options).fetch_balances()


def failure(handler: Handler) -> VenueError:
    with pytest.raises(VenueError) as caught:
        fetch(handler)
    return caught.value


# --- the request ---------------------------------------------------------------------------------


def test_request_is_a_signed_form_post_to_the_balance_path() -> None:
    """POST /0/private/Balance, body nonce=<n>, API-Key, API-Sign over path+SHA256(nonce+body)."""
    recorder = Recorder(ok({}))
    fetch(recorder, base_url="https://kraken.test/")
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == "https://kraken.test/0/private/Balance"
    assert request.content == b"nonce=1700000000123"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["API-Key"] == API_KEY
    digest = hashlib.sha256(b"1700000000123" + request.content).digest()
    expected = hmac.new(
        base64.b64decode(SECRET), BALANCE_PATH.encode() + digest, hashlib.sha512
    ).digest()
    assert base64.b64decode(request.headers["API-Sign"]) == expected


def test_default_nonces_grow_across_clients_of_one_key_and_threads() -> None:
    """Concurrent clients of one key (default nonces) send unique nonces, growing per thread."""
    lock = threading.Lock()
    sent: dict[int, list[int]] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        nonce = int(urllib.parse.parse_qs(request.content.decode())["nonce"][0])
        with lock:  # MockTransport calls the handler on the calling thread
            sent.setdefault(threading.get_ident(), []).append(nonce)
        return httpx.Response(200, content=ok({}))

    def worker() -> None:
        with httpx.Client(transport=httpx.MockTransport(handler)) as http:
            client = KrakenClient(
                http, api_key="threaded-key", api_secret=SECRET, timeout=5, clock=lambda: NOW
            )
            for _ in range(25):
                client.fetch_balances()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [n for own in sent.values() for n in own]
    assert len(every) == 200
    assert len(set(every)) == 200
    for own in sent.values():
        assert all(a < b for a, b in itertools.pairwise(own))


def test_nonces_of_one_client_strictly_increase() -> None:
    """Back-to-back calls of one client send strictly increasing nonces (process-wide source)."""
    recorder = Recorder(ok({}))
    with httpx.Client(transport=httpx.MockTransport(recorder)) as http:
        client = KrakenClient(http, api_key="sequential-key", api_secret=SECRET, timeout=5)
        for _ in range(50):
            client.fetch_balances()
    nonces = [int(r.content.decode().removeprefix("nonce=")) for r in recorder.requests]
    assert all(a < b for a, b in itertools.pairwise(nonces))


@pytest.mark.parametrize("api_key", ["", "   ", "has space", "tab\there"])
def test_an_unusable_api_key_is_refused_at_construction(api_key: str) -> None:
    """An empty key or one with whitespace inside cannot be a header value: KrakenKeyError."""
    with (
        httpx.Client(transport=httpx.MockTransport(respond(ok({})))) as http,
        pytest.raises(KrakenKeyError),
    ):
        KrakenClient(http, api_key=api_key, api_secret=SECRET, timeout=5)


def test_a_secret_that_is_not_base64_is_refused_at_construction_without_echo() -> None:
    """A non-base64 secret raises KrakenKeyError and the message does not repeat it."""
    secret = "this is not base64 at all!"
    with (
        httpx.Client(transport=httpx.MockTransport(respond(ok({})))) as http,
        pytest.raises(KrakenKeyError) as caught,
    ):
        KrakenClient(http, api_key=API_KEY, api_secret=secret, timeout=5)
    assert secret not in str(caught.value)


# --- errors in the body (HTTP 200) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("EAPI:Invalid key", VenueAuthError),
        ("EAPI:Invalid signature", VenueAuthError),
        ("EAPI:Invalid nonce", VenueAuthError),
        ("EGeneral:Permission denied", VenueAuthError),
        ("EGeneral:Temporary lockout", VenueAuthError),
        ("EAPI:Rate limit exceeded", VenueRateLimited),
        ("EGeneral:Too many requests", VenueRateLimited),
        ("EService: Throttled: 1700000030", VenueRateLimited),
        ("EService:Unavailable", VenueUnavailable),
        ("EService:Busy", VenueUnavailable),
        ("EService:Deadline elapsed", VenueUnavailable),
        ("EGeneral:Internal error", VenueUnavailable),
        ("EGeneral:Invalid arguments", VenueConfigError),
        ("EGeneral:Invalid arguments:ordertype", VenueConfigError),
        ("EAPI:Feature disabled", VenueConfigError),
        ("EQuery:Unknown asset", VenueConfigError),
    ],
)
def test_each_error_code_maps_to_its_venue_error(code: str, expected: type[VenueError]) -> None:
    """An HTTP 200 body with a non-empty error array raises the mapped class and names the code."""
    error = failure(respond(body({"error": [code]})))
    assert type(error) is expected
    category, message = (part.strip() for part in code.split(":")[:2])
    assert f"{category}:{message}" in str(error)
    assert str(error).startswith("kraken: ")


@pytest.mark.parametrize("with_result", [True, False])
def test_error_bodies_with_or_without_result_are_both_read(with_result: bool) -> None:
    """The docs show errors both with "result": {} and without a result: both map the same."""
    payload: dict[str, Any] = {"error": ["EAPI:Invalid key"]}
    if with_result:
        payload["result"] = {}
    assert isinstance(failure(respond(body(payload))), VenueAuthError)


def test_throttled_retry_after_is_the_timestamp_minus_now() -> None:
    """EService: Throttled: <unix ts> gives retry_after = ts − now, in seconds."""
    error = failure(respond(body({"error": ["EService: Throttled: 1700000030"]})))
    assert isinstance(error, VenueRateLimited)
    assert error.retry_after == pytest.approx(30.0)
    assert "1700000030" not in str(error)


@pytest.mark.parametrize("code", ["EService: Throttled: 1699999990", "EService:Throttled"])
def test_throttled_in_the_past_or_without_a_time_never_gives_a_negative_wait(code: str) -> None:
    """A past timestamp waits 0 s; a missing or unparsable one gives no retry_after."""
    error = failure(respond(body({"error": [code]})))
    assert isinstance(error, VenueRateLimited)
    assert error.retry_after == (0.0 if "1699" in code else None)


def test_rate_limit_exceeded_has_no_retry_after() -> None:
    """EAPI:Rate limit exceeded carries no wait: retry_after is None (the policy's delays apply)."""
    error = failure(respond(body({"error": ["EAPI:Rate limit exceeded"]})))
    assert isinstance(error, VenueRateLimited)
    assert error.retry_after is None


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        (["EService:Unavailable", "EAPI:Invalid key"], VenueAuthError),
        (["EAPI:Rate limit exceeded", "EGeneral:Invalid arguments"], VenueConfigError),
        (["EService:Busy", "EAPI:Rate limit exceeded"], VenueRateLimited),
    ],
)
def test_several_errors_pick_the_permanent_kind_first(
    codes: list[str], expected: type[VenueError]
) -> None:
    """Auth beats config beats rate-limited beats unavailable when one body holds several."""
    assert type(error_for(codes, now=NOW)) is expected


def test_warnings_are_ignored() -> None:
    """W-prefixed entries are warnings: the result is still read."""
    content = body({"error": ["WGeneral:Deprecated endpoint"], "result": {"ZUSD": "5.0000"}})
    assert fetch(respond(content)) == {"USD": Decimal("5.0000")}


@pytest.mark.parametrize(
    "error_array",
    [["Invalid key"], [42], [None], "EAPI:Invalid key", {"EAPI": "Invalid key"}, ["EAPI"]],
)
def test_an_error_array_of_the_wrong_shape_is_malformed(error_array: Any) -> None:
    """An error field that is not an array of E…/W… code strings is malformed."""
    error = failure(respond(body({"error": error_array, "result": {}})))
    assert isinstance(error, MalformedVenueResponse)


def test_a_body_without_an_error_field_is_malformed() -> None:
    """The documented body always has "error": a body without it is malformed."""
    assert isinstance(failure(respond(body({"result": {"ZUSD": "1"}}))), MalformedVenueResponse)


def test_a_body_without_result_and_without_errors_is_malformed() -> None:
    """No errors and no result is not the documented success body."""
    assert isinstance(failure(respond(body({"error": []}))), MalformedVenueResponse)


def test_error_messages_drop_digits_and_free_text_that_could_hold_an_amount() -> None:
    """Only letter-and-space code parts reach the message; an amount in a code never does."""
    error = error_for(["EFunding:Insufficient funds: 12.5 XBT", "EGeneral:Invalid 0.25"], now=NOW)
    assert "12.5" not in str(error)
    assert "0.25" not in str(error)
    assert "EFunding:Insufficient funds" in str(error)


def test_long_error_lists_are_summarised() -> None:
    """At most three codes are named; the rest are counted."""
    error = error_for([f"EGeneral:Invalid arguments{'x' * i}" for i in range(5)], now=NOW)
    assert str(error).endswith("and 2 more)")


# --- HTTP status and body failures ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, VenueUnavailable),
        (502, VenueUnavailable),
        (503, VenueUnavailable),
        (520, VenueUnavailable),
        (429, VenueRateLimited),
        (408, VenueTimeout),
        (401, VenueAuthError),
        (403, VenueAuthError),
        (404, VenueConfigError),
        (301, VenueConfigError),
    ],
)
def test_non_200_statuses_use_the_shared_mapping(status: int, expected: type[VenueError]) -> None:
    """A non-200 means the request did not reach the API properly: check_status maps it."""
    error = failure(respond(b"<html><body>cloudflare</body></html>", status))
    assert type(error) is expected
    assert f"HTTP {status}" in str(error)


def test_a_429_honours_retry_after_in_seconds() -> None:
    """A CDN's 429 with Retry-After: 7 waits 7 seconds."""
    error = failure(respond(b"<html>Too Many Requests</html>", 429, **{"Retry-After": "7"}))
    assert isinstance(error, VenueRateLimited)
    assert error.retry_after == 7.0


def test_a_5xx_with_a_kraken_error_body_is_still_unavailable() -> None:
    """A 503 whose body is Kraken's {"error": [...]} maps by status: unavailable."""
    error = failure(respond(body({"error": ["EService:Unavailable"]}), 503))
    assert isinstance(error, VenueUnavailable)


def test_timeouts_and_refused_connections_map_to_transient_errors() -> None:
    """httpx timeouts are VenueTimeout; connection errors are VenueUnavailable."""

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert isinstance(failure(timeout), VenueTimeout)
    assert isinstance(failure(refused), VenueUnavailable)


@pytest.mark.parametrize(
    "content",
    [
        b"<!DOCTYPE html><html><body>maintenance</body></html>",
        ok({"XXBT": "0.5000000000", "ZUSD": "2500.1234"})[:30],
        b"",
        b"[]",
        b'"ok"',
        body({"error": [], "result": []}),
        body({"error": [], "result": "0.5"}),
        b'{"error": [], "result": {"XXBT": "1", "XXBT": "2"}}',
    ],
    ids=["html", "truncated", "empty", "array", "string", "result-array", "result-str", "dup-key"],
)
def test_bodies_that_are_not_the_documented_json_are_malformed(content: bytes) -> None:
    """HTML, truncated or empty bodies, wrong top-level types and duplicate keys are malformed."""
    assert isinstance(failure(respond(content)), MalformedVenueResponse)


@pytest.mark.parametrize(
    "value",
    ["NaN", "Infinity", "-Infinity", "1e400", "abc", "", "-0.5", True, None, [], {"balance": "1"}],
)
def test_bad_amounts_are_malformed_and_never_echoed(value: Any) -> None:
    """Non-finite, absurd, non-numeric or negative totals are malformed, naming only the key."""
    error = failure(respond(body({"error": [], "result": {"XXBT": value}})))
    assert isinstance(error, MalformedVenueResponse)
    assert "result[XXBT]" in str(error)
    if value in ("1e400", "abc", "-0.5"):
        assert value not in str(error)


@pytest.mark.parametrize(
    "content",
    [b'{"error": [], "result": {"XXBT": NaN}}', b'{"error": [], "result": {"XXBT": Infinity}}'],
)
def test_non_standard_json_number_constants_are_malformed(content: bytes) -> None:
    """JSON NaN/Infinity literals are refused by the exact decoder."""
    assert isinstance(failure(respond(content)), MalformedVenueResponse)


def test_a_result_key_that_is_not_an_asset_id_is_malformed_and_not_echoed() -> None:
    """A key that cannot be an asset id (digits only, spaces) is malformed; the key is not shown."""
    for key in ["12345.67", "has space", ""]:
        error = failure(respond(body({"error": [], "result": {key: "1"}})))
        assert isinstance(error, MalformedVenueResponse)
        if key:
            assert key not in str(error)


# --- amounts -------------------------------------------------------------------------------------


def test_the_reference_example_is_read_exactly() -> None:
    """The reference's Balance example maps legacy ids, keeps suffixes, and keeps every digit."""
    content = ok(
        {
            "ZUSD": "2500.1234",
            "XXBT": "0.5000000000",
            "XETH": "3.2500000000",
            "USDT": "100.00000000",
            "DOT.S": "10.0000000000",
            "ETH.F": "0.1000000000",
            "USD.M": "15.0000",
        }
    )
    assert fetch(respond(content)) == {
        "USD": Decimal("2500.1234"),
        "BTC": Decimal("0.5000000000"),
        "ETH": Decimal("3.2500000000"),
        "USDT": Decimal("100.00000000"),
        "DOT.S": Decimal("10.0000000000"),
        "ETH.F": Decimal("0.1000000000"),
        "USD.M": Decimal("15.0000"),
    }


def test_json_numbers_are_parsed_exactly() -> None:
    """Amounts sent as JSON numbers are read as exact decimals, never through float."""
    content = b'{"error": [], "result": {"XXBT": 0.12345678901234567890123, "ZUSD": 25}}'
    balances = fetch(respond(content))
    assert balances == {
        "BTC": Decimal("0.12345678901234567890123"),
        "USD": Decimal(25),
    }
    assert all(isinstance(v, Decimal) for v in balances.values())


def test_an_empty_result_is_no_balances() -> None:
    """result {} is an account holding nothing: an empty mapping, not an error."""
    assert fetch(respond(ok({}))) == {}


def test_zero_entries_are_kept() -> None:
    """A zero total is reported (the book may hold that asset), not dropped."""
    assert fetch(respond(ok({"XXBT": "0.0000000000", "ZEUR": "0"}))) == {
        "BTC": Decimal(0),
        "EUR": Decimal(0),
    }


def test_codes_that_map_to_one_asset_are_summed() -> None:
    """XXBT and XBT both present are both BTC: their totals add up exactly."""
    content = ok({"XXBT": "0.5000000000", "XBT": "0.2500000001", "XXDG": "10", "XDG": "5"})
    assert fetch(respond(content)) == {"BTC": Decimal("0.7500000001"), "DOGE": Decimal(15)}


@pytest.mark.parametrize("code", ["XTZ", "ZRX", "XAUT", "XCN", "ZEUS", "USDT", "SOL", "CHF"])
def test_codes_that_merely_start_with_x_or_z_stay_as_they_are(code: str) -> None:
    """Letters are never stripped: XTZ, ZRX, XAUT … come back unchanged."""
    assert fetch(respond(ok({code: "1"}))) == {code: Decimal(1)}


@pytest.mark.parametrize(
    ("venue_code", "canonical"),
    [
        ("XXBT", "BTC"),
        ("XBT", "BTC"),
        ("XETH", "ETH"),
        ("XLTC", "LTC"),
        ("XXRP", "XRP"),
        ("XXLM", "XLM"),
        ("XXMR", "XMR"),
        ("XZEC", "ZEC"),
        ("XETC", "ETC"),
        ("XMLN", "MLN"),
        ("XREP", "REP"),
        ("XXDG", "DOGE"),
        ("XDG", "DOGE"),
        ("ZUSD", "USD"),
        ("ZEUR", "EUR"),
        ("ZGBP", "GBP"),
        ("ZCAD", "CAD"),
        ("ZJPY", "JPY"),
        ("ZAUD", "AUD"),
    ],
)
def test_legacy_codes_map_through_the_table(venue_code: str, canonical: str) -> None:
    """Every legacy id in the table maps to the code desks use."""
    assert fetch(respond(ok({venue_code: "1"}))) == {canonical: Decimal(1)}


@pytest.mark.parametrize(
    ("venue_code", "canonical"),
    [
        ("ETH.F", "ETH.F"),
        ("DOT.S", "DOT.S"),
        ("USD.M", "USD.M"),
        ("USD.HOLD", "USD.HOLD"),
        ("XBT.M", "BTC.M"),
        ("XXBT.M", "BTC.M"),
        ("XDG.S", "DOGE.S"),
        ("XTZ.S", "XTZ.S"),
    ],
)
def test_suffixed_codes_stay_separate_with_a_canonical_base(
    venue_code: str, canonical: str
) -> None:
    """A suffixed code keeps its suffix (a separate asset); only its base goes through the table."""
    assert canonical_asset(venue_code) == canonical


def test_suffixed_balances_are_not_folded_into_the_base() -> None:
    """ETH and ETH.F are reported separately: folding them is the asset_map's job."""
    assert fetch(respond(ok({"XETH": "1", "ETH.F": "0.5"}))) == {
        "ETH": Decimal(1),
        "ETH.F": Decimal("0.5"),
    }


def test_the_table_maps_by_exact_code_only() -> None:
    """No table key is derived by stripping a prefix of another: every entry is explicit."""
    for code in ("XTZ", "ZRX", "XAUT", "TBTC", "XXBTX"):
        assert code not in LEGACY_CODES
        assert canonical_asset(code) == code


def test_no_amount_or_secret_appears_in_any_error_message() -> None:
    """Across error shapes, messages never contain the secret, the key or an amount sent."""
    bodies = [
        body({"error": ["EAPI:Invalid key"]}),
        body({"error": ["EService: Throttled: 1700000030"]}),
        body({"error": [], "result": {"XXBT": "-123.456"}}),
        body({"error": [], "result": {"XXBT": "NaN", "ZUSD": "987.65"}}),
        ok({"XXBT": "0.5", "ZUSD": "2500.1234"})[:40],
    ]
    for content in bodies:
        for status in (200, 503, 403):
            message = str(failure(respond(content, status)))
            for secret_or_amount in (SECRET, API_KEY, "123.456", "987.65", "2500.1234", "0.5"):
                assert secret_or_amount not in message
