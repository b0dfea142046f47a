"""Coinbase Advanced Trade v3 client, and the shared HTTP failure mapping, against MockTransport."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from infra.venues import http as venue_http
from infra.venues.coinbase import CoinbaseClient, CoinbaseKeyError
from infra.venues.errors import (
    MalformedVenueResponse,
    VenueAuthError,
    VenueConfigError,
    VenueError,
    VenueRateLimited,
    VenueTimeout,
    VenueUnavailable,
)
from infra.venues.http import RetryAfterUnit, send

KEY_NAME = "organizations/org-1/apiKeys/key-1"
NOW = 1_700_000_000
Handler = Callable[[httpx.Request], httpx.Response]


# --- fakes -------------------------------------------------------------------------------------


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def pem(signing_key: ec.EllipticCurvePrivateKey) -> str:
    return _pem(signing_key)


def account(
    currency: str,
    available: Any,
    hold: Any = "0",
    *,
    type_: str = "ACCOUNT_TYPE_CRYPTO",
) -> dict[str, Any]:
    """One Account object shaped like the reference's example."""
    return {
        "uuid": "8bfc20d7-f7c6-4422-bf07-8243ca4169fe",
        "name": f"{currency} Wallet",
        "currency": currency,
        "available_balance": {"value": available, "currency": currency},
        "default": True,
        "active": True,
        "created_at": "2023-01-04T06:20:06.456Z",
        "updated_at": "2024-03-01T10:00:00.000Z",
        "deleted_at": None,
        "type": type_,
        "ready": True,
        "hold": {"value": hold, "currency": currency},
        "retail_portfolio_id": "b87a2d3f-8a1e-49b3-a4ea-402d8c389aca",
        "platform": "ACCOUNT_PLATFORM_CONSUMER",
    }


def page(accounts: list[dict[str, Any]], *, has_next: bool = False, cursor: str = "") -> bytes:
    return json.dumps(
        {"accounts": accounts, "has_next": has_next, "cursor": cursor, "size": len(accounts)}
    ).encode()


class Pages:
    """A fake accounts endpoint: serves one body per cursor and records every request."""

    def __init__(self, by_cursor: dict[str, bytes]) -> None:
        self.by_cursor = by_cursor
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = self.by_cursor[request.url.params.get("cursor", "")]
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})


def fetch(handler: Handler, pem: str, **kwargs: Any) -> dict[str, Decimal]:
    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        client = CoinbaseClient(
            http,
            key_name=KEY_NAME,
            private_key_pem=pem,
            timeout=10,
            clock=lambda: NOW + 0.75,
            **kwargs,
        )
        return client.fetch_balances()


def construct(**options: Any) -> CoinbaseClient:
    """A client built (and its HTTP client closed) just to exercise the constructor."""
    with httpx.Client(transport=httpx.MockTransport(respond(200))) as http:
        return CoinbaseClient(http, timeout=1, **options)


def respond(status: int, body: bytes = b"", **headers: str) -> Handler:
    return lambda request: httpx.Response(status, content=body, headers=headers)


def raising(exc_type: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("simulated", request=request)

    return handler


# --- pagination and totals ---------------------------------------------------------------------


def test_follows_three_pages_to_the_end_and_sums_each_currency(pem: str) -> None:
    """Every page is fetched with limit and the previous cursor; one currency's pages add up."""
    pages = Pages(
        {
            "": page([account("BTC", "0.5", "0.1")], has_next=True, cursor="c1"),
            "c1": page(
                [account("BTC", "0.25"), account("USD", "10.01")], has_next=True, cursor="c2"
            ),
            "c2": page([account("ETH", "3.0000000000000001", "1")], has_next=False, cursor=""),
        }
    )
    assert fetch(pages, pem) == {
        "BTC": Decimal("0.85"),
        "USD": Decimal("10.01"),
        "ETH": Decimal("4.0000000000000001"),
    }
    assert [dict(r.url.params) for r in pages.requests] == [
        {"limit": "250"},
        {"limit": "250", "cursor": "c1"},
        {"limit": "250", "cursor": "c2"},
    ]
    assert all(r.url.path == "/api/v3/brokerage/accounts" for r in pages.requests)


def test_page_limit_is_sent(pem: str) -> None:
    """A smaller page_limit is what the request asks for."""
    pages = Pages({"": page([])})
    fetch(pages, pem, page_limit=2)
    assert pages.requests[0].url.params["limit"] == "2"


def test_empty_cursor_ends_pagination_even_if_has_next(pem: str) -> None:
    """A "" cursor is the last page, whatever has_next says."""
    pages = Pages({"": page([account("BTC", "1")], has_next=True, cursor="")})
    assert fetch(pages, pem) == {"BTC": Decimal(1)}
    assert len(pages.requests) == 1


def test_repeated_cursor_is_malformed(pem: str) -> None:
    """A cursor seen before would loop forever: the response is malformed."""
    pages = Pages(
        {
            "": page([account("BTC", "1")], has_next=True, cursor="a"),
            "a": page([account("BTC", "1")], has_next=True, cursor="b"),
            "b": page([account("BTC", "1")], has_next=True, cursor="a"),
        }
    )
    with pytest.raises(MalformedVenueResponse, match="cursor repeats"):
        fetch(pages, pem)
    assert len(pages.requests) == 3


def test_vault_fiat_and_short_fiat_type_are_all_summed(pem: str) -> None:
    """Accounts of every type (vault, ACCOUNT_TYPE_FIAT, the docs' "FIAT") add to one total."""
    pages = Pages(
        {
            "": page(
                [
                    account("BTC", "1", "0.5", type_="ACCOUNT_TYPE_CRYPTO"),
                    account("BTC", "2", type_="ACCOUNT_TYPE_VAULT"),
                    account("USD", "100", "1", type_="ACCOUNT_TYPE_FIAT"),
                    account("USD", "50", type_="FIAT"),
                ]
            )
        }
    )
    assert fetch(pages, pem) == {"BTC": Decimal("3.5"), "USD": Decimal(151)}


def test_json_numbers_are_parsed_exactly(pem: str) -> None:
    """Amounts sent as JSON numbers are read without float rounding (0.1 + 0.2 is 0.3)."""
    body = (
        b'{"accounts": [{"currency": "BTC", "available_balance": {"value": 0.1, "currency": "BTC"},'
        b' "hold": {"value": 0.2, "currency": "BTC"}}, {"currency": "ETH",'
        b' "available_balance": {"value": 1234567890123456789.5, "currency": "ETH"},'
        b' "hold": {"value": 0, "currency": "ETH"}}], "has_next": false, "cursor": ""}'
    )
    assert fetch(respond(200, body), pem) == {
        "BTC": Decimal("0.3"),
        "ETH": Decimal("1234567890123456789.5"),
    }


def test_sixteen_decimal_strings_keep_every_digit(pem: str) -> None:
    """Coinbase's 16-decimal strings sum exactly."""
    pages = Pages({"": page([account("SOL", "0.0000000000000001", "0.0000000000000002")])})
    assert fetch(pages, pem) == {"SOL": Decimal("0.0000000000000003")}


# --- JWT ---------------------------------------------------------------------------------------


def test_each_request_carries_a_fresh_es256_jwt(
    pem: str, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    """Every page has its own token (distinct nonce), verifiable with the key's public half."""
    pages = Pages(
        {
            "": page([], has_next=True, cursor="c1"),
            "c1": page([], has_next=False),
        }
    )
    fetch(pages, pem)
    tokens = [r.headers["Authorization"].removeprefix("Bearer ") for r in pages.requests]
    assert all(r.headers["Authorization"].startswith("Bearer ") for r in pages.requests)
    headers = [jwt.get_unverified_header(t) for t in tokens]
    claims = [
        jwt.decode(
            t,
            signing_key.public_key(),
            algorithms=["ES256"],
            options={"verify_exp": False, "verify_nbf": False},
        )
        for t in tokens
    ]
    for header in headers:
        assert header["alg"] == "ES256"
        assert header["kid"] == KEY_NAME
        assert len(header["nonce"]) == 64
        int(header["nonce"], 16)
    assert headers[0]["nonce"] != headers[1]["nonce"]
    assert tokens[0] != tokens[1]
    for claim in claims:
        assert claim == {
            "sub": KEY_NAME,
            "iss": "cdp",
            "nbf": NOW,
            "exp": NOW + 120,
            "uri": "GET api.coinbase.com/api/v3/brokerage/accounts",
        }


def test_jwt_uri_names_host_and_port_without_scheme_or_query(
    pem: str, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    """Against a base_url with a port, the uri claim is "GET host:port/path", no query."""
    pages = Pages({"": page([])})
    fetch(pages, pem, base_url="http://127.0.0.1:9000/")
    request = pages.requests[0]
    assert str(request.url).startswith("http://127.0.0.1:9000/api/v3/brokerage/accounts?")
    token = request.headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(
        token,
        signing_key.public_key(),
        algorithms=["ES256"],
        options={"verify_exp": False, "verify_nbf": False},
    )
    assert claims["uri"] == "GET 127.0.0.1:9000/api/v3/brokerage/accounts"


def test_token_is_valid_now_with_the_real_clock(
    pem: str, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    """With the default clock the token passes PyJWT's own nbf/exp checks."""
    pages = Pages({"": page([])})
    with httpx.Client(transport=httpx.MockTransport(pages)) as http:
        CoinbaseClient(http, key_name=KEY_NAME, private_key_pem=pem, timeout=5).fetch_balances()
    token = pages.requests[0].headers["Authorization"].removeprefix("Bearer ")
    jwt.decode(token, signing_key.public_key(), algorithms=["ES256"])


def test_escaped_newlines_in_the_pem_are_accepted(
    pem: str, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    """A PEM pasted with literal \\n escapes (as in Coinbase's key JSON) still signs."""
    pages = Pages({"": page([])})
    fetch(pages, pem.strip().replace("\n", "\\n"))
    token = pages.requests[0].headers["Authorization"].removeprefix("Bearer ")
    jwt.decode(token, signing_key.public_key(), algorithms=["ES256"], options={"verify_exp": False})


@pytest.mark.parametrize(
    "bad_pem",
    [
        "",
        "not a key at all",
        "-----BEGIN EC PRIVATE KEY-----\nAAAASECRETMATERIAL\n-----END EC PRIVATE KEY-----\n",
    ],
)
def test_invalid_private_key_is_a_clear_key_error_without_the_key(bad_pem: str) -> None:
    """A PEM that does not load fails at construction, and the message does not quote it."""
    with pytest.raises(CoinbaseKeyError) as info:
        construct(key_name=KEY_NAME, private_key_pem=bad_pem)
    assert "SECRETMATERIAL" not in str(info.value)
    assert "private key" in str(info.value)


def test_non_p256_key_is_refused() -> None:
    """An EC key on another curve cannot sign ES256: refused at construction."""
    other = _pem(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(CoinbaseKeyError, match="P-256"):
        construct(key_name=KEY_NAME, private_key_pem=other)


def test_empty_key_name_is_refused(pem: str) -> None:
    """A blank key name is a configuration error at construction."""
    with pytest.raises(CoinbaseKeyError, match="key name"):
        construct(key_name=" ", private_key_pem=pem)


# --- HTTP failures -----------------------------------------------------------------------------


def test_plain_text_401_is_an_auth_error(pem: str) -> None:
    """Coinbase's plain-text "Unauthorized" 401 body maps to VenueAuthError."""
    with pytest.raises(VenueAuthError, match="HTTP 401") as info:
        fetch(respond(401, b"Unauthorized", **{"Content-Type": "text/plain"}), pem)
    assert info.value.kind == "auth"


def test_403_names_the_venue_error_code_only(pem: str) -> None:
    """A JSON 403 is an auth error naming the code, not the details or message text."""
    body = b'{"error":"PERMISSION_DENIED","error_details":"Missing required scopes","message":"x"}'
    with pytest.raises(VenueAuthError) as info:
        fetch(respond(403, body), pem)
    assert str(info.value) == "coinbase: credentials refused (HTTP 403, PERMISSION_DENIED)"


HTML_429 = b"<html><head><title>429 Too Many Requests</title></head><body>slow down</body></html>"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, None),
        ({"Retry-After": "-3"}, None),
    ],
)
def test_html_429_is_rate_limited_with_retry_after_in_seconds(
    pem: str, headers: dict[str, str], expected: float | None
) -> None:
    """An HTML 429 is VenueRateLimited; Retry-After is seconds, and absent or odd means None."""
    with pytest.raises(VenueRateLimited) as info:
        fetch(respond(429, HTML_429, **{"Content-Type": "text/html", **headers}), pem)
    assert info.value.retry_after == expected
    assert "HTTP 429" in str(info.value)


@pytest.mark.parametrize(
    ("handler", "error", "kind"),
    [
        (respond(500, b'{"error":"INTERNAL"}'), VenueUnavailable, "unavailable"),
        (respond(503, b"<html>maintenance</html>"), VenueUnavailable, "unavailable"),
        (respond(408), VenueTimeout, "timeout"),
        (respond(400, b'{"error":"INVALID_ARGUMENT"}'), VenueConfigError, "config"),
        (respond(404, b"Not Found"), VenueConfigError, "config"),
        (respond(301, b"", Location="https://elsewhere.example/"), VenueConfigError, "config"),
        (raising(httpx.ReadTimeout), VenueTimeout, "timeout"),
        (raising(httpx.ConnectTimeout), VenueTimeout, "timeout"),
        (raising(httpx.ConnectError), VenueUnavailable, "unavailable"),
        (raising(httpx.ReadError), VenueUnavailable, "unavailable"),
        (raising(httpx.RemoteProtocolError), VenueUnavailable, "unavailable"),
    ],
)
def test_http_failures_map_to_the_venue_error_tree(
    pem: str, handler: Handler, error: type[VenueError], kind: str
) -> None:
    """5xx, timeouts and transport errors are transient; other 4xx and redirects are config."""
    with pytest.raises(error) as info:
        fetch(handler, pem)
    assert type(info.value) is error
    assert info.value.kind == kind
    assert str(info.value).startswith("coinbase: ")


def test_a_failure_on_a_later_page_fails_the_whole_fetch(pem: str) -> None:
    """A venue failure after page one is never a partial (lower) balance."""
    first = page([account("BTC", "1")], has_next=True, cursor="c1")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("cursor") == "c1":
            return httpx.Response(502, content=b"Bad Gateway")
        return httpx.Response(200, content=first)

    with pytest.raises(VenueUnavailable, match="HTTP 502"):
        fetch(handler, pem)


# --- malformed bodies --------------------------------------------------------------------------


def _accounts_body(accounts_json: str, tail: str = '"has_next": false, "cursor": ""') -> bytes:
    return f'{{"accounts": [{accounts_json}], {tail}}}'.encode()


def _one(available: str, hold: str = '"0"') -> bytes:
    return _accounts_body(
        f'{{"currency": "BTC", "available_balance": {{"value": {available}, "currency": "BTC"}},'
        f' "hold": {{"value": {hold}, "currency": "BTC"}}}}'
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"<html><body>Welcome</body></html>", "not valid JSON"),
        (b'{"accounts": [{"currency": "BTC", "available_bal', "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[]", "page 1"),
        (b'{"accounts": {}, "has_next": false, "cursor": ""}', "accounts"),
        (b'{"has_next": false, "cursor": ""}', "accounts is missing"),
        (_accounts_body("", '"has_next": "no", "cursor": ""'), "has_next"),
        (_accounts_body("", '"cursor": ""'), "has_next is missing"),
        (_accounts_body("", '"has_next": true, "cursor": 5'), "cursor"),
        (_accounts_body("", '"has_next": true'), "cursor is missing"),
        (_accounts_body('"BTC"'), "accounts[0]"),
        (_one("NaN"), "non-finite"),
        (_one("Infinity"), "non-finite"),
        (_one('"NaN"'), "accounts[0].available_balance.value"),
        (_one('"Infinity"'), "accounts[0].available_balance.value"),
        (_one("1e400"), "accounts[0].available_balance.value"),
        (_one('"1e400"'), "accounts[0].available_balance.value"),
        (_one("true"), "accounts[0].available_balance.value"),
        (_one("null"), "accounts[0].available_balance.value"),
        (_one('"1.5 BTC"'), "accounts[0].available_balance.value"),
        (_one('"-0.1"'), "accounts[0].available_balance.value"),
        (_one('"1"', '"-0.1"'), "accounts[0].hold.value"),
        (_one('"1"', "-1"), "accounts[0].hold.value"),
        (
            _accounts_body('{"currency": "BTC", "available_balance": {"value": "1"}}'),
            "accounts[0].hold is missing",
        ),
        (
            _accounts_body('{"currency": "BTC", "available_balance": {"value": "1"}, "hold": "0"}'),
            "accounts[0].hold",
        ),
        (
            _accounts_body('{"available_balance": {"value": "1"}, "hold": {"value": "0"}}'),
            "accounts[0].currency is missing",
        ),
        (
            _accounts_body(
                '{"currency": "", "available_balance": {"value": "1"}, "hold": {"value": "0"}}'
            ),
            "accounts[0].currency is empty",
        ),
        (
            _accounts_body(
                '{"currency": "BTC", "available_balance": {"value": "1", "currency": "ETH"},'
                ' "hold": {"value": "0"}}'
            ),
            "currency differs",
        ),
        (
            _accounts_body(
                '{"currency": "BTC", "available_balance": {"value": "1", "value": "2"},'
                ' "hold": {"value": "0"}}'
            ),
            "duplicate key 'value'",
        ),
    ],
)
def test_malformed_bodies_are_refused(pem: str, body: bytes, field: str) -> None:
    """Non-JSON, truncated, wrong types, non-finite or negative amounts are all malformed."""
    with pytest.raises(MalformedVenueResponse) as info:
        fetch(respond(200, body), pem)
    assert info.value.kind == "malformed"
    assert field in str(info.value)


# --- what messages never carry -----------------------------------------------------------------


SECRET_AMOUNTS = ("987654.321", "555444.333", "111222.999")


def _leaky_handlers() -> list[Handler]:
    """Responses that fail while carrying distinctive amounts in their bodies."""
    a, b, c = SECRET_AMOUNTS
    leaky_json = f'{{"error": "{a}", "message": "balance {b}", "code": {c}}}'.encode()
    return [
        respond(200, _one(f'"{a}"', f'"-{b}"')),
        respond(200, _one(f'"{a}"', f'"{b}x"')),
        respond(200, _one(f"{a}", "NaN")),
        respond(200, f'{{"accounts": [{{"currency": "BTC", "available_balance": {a}'.encode()),
        respond(200, f"<html>{a} {b} {c}</html>".encode()),
        respond(401, leaky_json),
        respond(403, leaky_json),
        respond(429, leaky_json, **{"Retry-After": c}),
        respond(400, leaky_json),
        respond(500, leaky_json),
    ]


@pytest.mark.parametrize("handler", _leaky_handlers())
def test_messages_never_contain_amounts_or_the_key(pem: str, handler: Handler) -> None:
    """No error message repeats an amount from the body, the private key or the key name."""
    with pytest.raises(VenueError) as info:
        fetch(handler, pem)
    text = f"{info.value} {info.value.message!r} {info.value!r}"
    for amount in SECRET_AMOUNTS:
        assert amount not in text
        assert amount.split(".")[0] not in text
    assert KEY_NAME not in text
    pem_body = "".join(pem.strip().splitlines()[1:-1])
    assert pem_body[:20] not in text


# --- the shared HTTP helper's total deadline and size cap -------------------------------------


def test_total_deadline_bounds_a_dripping_body() -> None:
    """A body that keeps streaming past the total timeout is a VenueTimeout."""
    ticks: Iterator[int] = itertools.count(0, 4)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([b'{"a":', b' "b"', b", ", b'"c": 1}']))

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as http,
        pytest.raises(VenueTimeout, match="not complete within 10 s"),
    ):
        send(http, "GET", "https://x.test/", venue="v", timeout=10, monotonic=lambda: next(ticks))


def test_oversized_body_is_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body larger than the cap is refused before it is parsed."""
    monkeypatch.setattr(venue_http, "MAX_BODY_BYTES", 16)
    with (
        httpx.Client(transport=httpx.MockTransport(respond(200, b"x" * 17))) as http,
        pytest.raises(MalformedVenueResponse, match="exceeds 16 bytes"),
    ):
        send(http, "GET", "https://x.test/", venue="v", timeout=10)


def test_unsupported_scheme_is_a_config_error() -> None:
    """A base_url that is not http(s) is a configuration problem, not an outage."""
    with httpx.Client() as http, pytest.raises(VenueConfigError, match="scheme"):
        send(http, "GET", "ftp://x.test/", venue="v", timeout=1)


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        ("1500", RetryAfterUnit.MILLISECONDS, 1.5),
        ("2", RetryAfterUnit.SECONDS, 2.0),
        (" 3 ", RetryAfterUnit.SECONDS, 3.0),
        ("1e3", RetryAfterUnit.SECONDS, None),
        ("", RetryAfterUnit.SECONDS, None),
        (None, RetryAfterUnit.SECONDS, None),
    ],
)
def test_retry_after_parsing(
    value: str | None, unit: RetryAfterUnit, expected: float | None
) -> None:
    """Retry-After deltas convert by the venue's unit; anything but a plain number is None."""
    assert venue_http.parse_retry_after(value, unit) == expected
