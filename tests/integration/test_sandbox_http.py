"""The sandbox venue over real HTTP: a SandboxServer on an ephemeral loopback port and httpx."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from infra.sandbox import DATA_DIR, DEFAULT_SCENARIO, SandboxServer, parse_scenario

ACCOUNTS = "/api/v3/brokerage/accounts"
ADDRESS = "dydx1testaddress000000000000000000000000aa"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


KEYS = {name: _key() for name in ("main", "faulty", "limited", "other")}
KEY_NAMES = {name: f"organizations/org-test/apiKeys/{name}" for name in KEYS}


def sdk_jwt(
    name: str,
    uri: str,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    exp_in: int = 120,
    extra: dict[str, Any] | None = None,
) -> str:
    """A token as coinbase-advanced-py signs it: ES256, kid + nonce, sub, iss=cdp, nbf, exp, uri."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": KEY_NAMES[name],
        "iss": "cdp",
        "nbf": now,
        "exp": now + exp_in,
        "uri": uri,
    }
    claims.update(extra or {})
    return jwt.encode(
        claims,
        key or KEYS[name],
        algorithm="ES256",
        headers={"kid": KEY_NAMES[name], "nonce": secrets.token_hex()},
    )


def _coinbase(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"cb-{name}",
        "venue": "coinbase",
        "key_name": KEY_NAMES[name],
        "public_key": _public_pem(KEYS[name]),
        "balances": [{"currency": "BTC", "available": "1", "hold": "0"}],
        **fields,
    }


SCENARIO = parse_scenario(
    {
        "prices": {"BTC": "60000", "ETH": "3000"},
        "rate_limits": {"coinbase": {"requests": 3, "window_ms": 60_000}},
        "accounts": [
            _coinbase(
                "main",
                page_size=2,
                balances=[
                    {"currency": "BTC", "available": "1.5", "hold": "0.25"},
                    {"currency": "USD", "available": "100", "type": "ACCOUNT_TYPE_FIAT"},
                    {"currency": "BTC", "available": "0.5", "type": "ACCOUNT_TYPE_VAULT"},
                    {"currency": "ETH", "available": "2", "hold": "1"},
                    {"currency": "USDC", "available": "10.000000001"},
                ],
            ),
            _coinbase("faulty"),
            _coinbase("limited"),
            {
                "id": "dydx-0",
                "venue": "dydx",
                "address": ADDRESS,
                "subaccount": 0,
                "assets": [{"symbol": "USDC", "side": "LONG", "size": "1000.5"}],
                "perpetuals": [
                    {"market": "ETH-USD", "side": "SHORT", "size": "1.5", "entry_price": "3100"},
                    {"market": "BTC-USD", "side": "LONG", "size": "0.25"},
                ],
            },
            {
                "id": "dydx-3",
                "venue": "dydx",
                "address": ADDRESS,
                "subaccount": 3,
                "assets": [{"symbol": "USDC", "side": "SHORT", "size": "5"}],
            },
        ],
    },
    source="test-scenario",
)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(SCENARIO) as running:
        yield running


@pytest.fixture
def client(server: SandboxServer) -> Iterator[httpx.Client]:
    server.reset()
    with httpx.Client(base_url=server.base_url, timeout=5) as http:
        yield http


def _host(server: SandboxServer) -> str:
    return server.base_url.removeprefix("http://")


def _get_accounts(
    client: httpx.Client,
    server: SandboxServer,
    name: str = "main",
    params: dict[str, Any] | None = None,
) -> httpx.Response:
    token = sdk_jwt(name, f"GET {_host(server)}{ACCOUNTS}")
    return client.get(ACCOUNTS, params=params, headers={"Authorization": f"Bearer {token}"})


def _json(response: httpx.Response) -> Any:
    return json.loads(response.content, parse_float=Decimal)


def _with_faults(*faults: dict[str, Any], venue: str = "coinbase") -> SandboxServer:
    account = (
        _coinbase("faulty", faults=list(faults))
        if venue == "coinbase"
        else {
            "id": "dydx-f",
            "venue": "dydx",
            "address": ADDRESS,
            "subaccount": 0,
            "assets": [{"symbol": "USDC", "side": "LONG", "size": "7"}],
            "faults": list(faults),
        }
    )
    return SandboxServer(parse_scenario({"accounts": [account]}))


# ---------------------------------------------------------------- coinbase: pagination, auth


def test_coinbase_pages_follow_cursor_until_has_next_is_false(client, server):
    """Accounts come page by page (page_size caps limit) and the last page's cursor is ""."""
    pages: list[dict[str, Any]] = []
    cursor = ""
    while True:
        response = _get_accounts(client, server, params={"limit": 250, "cursor": cursor})
        assert response.status_code == 200
        page = _json(response)
        pages.append(page)
        assert page["size"] == len(page["accounts"])
        if not page["has_next"]:
            break
        cursor = page["cursor"]
        assert cursor
    assert [p["size"] for p in pages] == [2, 2, 1]
    assert pages[-1]["cursor"] == ""
    totals: dict[str, Decimal] = {}
    for entry in (a for p in pages for a in p["accounts"]):
        total = Decimal(entry["available_balance"]["value"]) + Decimal(entry["hold"]["value"])
        totals[entry["currency"]] = totals.get(entry["currency"], Decimal(0)) + total
    assert totals == {
        "BTC": Decimal("2.25"),
        "USD": Decimal(100),
        "ETH": Decimal(3),
        "USDC": Decimal("10.000000001"),
    }


def test_coinbase_account_objects_have_the_documented_shape(client, server):
    """Each account carries uuid, name, currency, balances as 16-decimal strings, type, flags."""
    page = _json(_get_accounts(client, server, params={"limit": 3}))
    assert page["size"] == 2  # page_size 2 caps the requested 3
    first = page["accounts"][0]
    assert set(first) >= {
        "uuid", "name", "currency", "available_balance", "default", "active", "created_at",
        "updated_at", "deleted_at", "type", "ready", "hold", "retail_portfolio_id", "platform",
    }  # fmt: skip
    assert first["available_balance"] == {"value": "1.5000000000000000", "currency": "BTC"}
    assert first["hold"] == {"value": "0.2500000000000000", "currency": "BTC"}
    assert first["type"] == "ACCOUNT_TYPE_CRYPTO"
    assert first["deleted_at"] is None
    vault = _json(_get_accounts(client, server, params={"cursor": page["cursor"]}))["accounts"][0]
    assert vault["type"] == "ACCOUNT_TYPE_VAULT"


def test_coinbase_bad_limit_or_cursor_is_a_json_400(client, server):
    """A non-numeric limit or an unknown cursor gets Coinbase's JSON error body."""
    for params in ({"limit": "abc"}, {"cursor": "999"}):
        response = _get_accounts(client, server, params=params)
        assert response.status_code == 400
        assert set(response.json()) == {"error", "error_details", "message"}


def test_coinbase_accepts_ccxt_style_tokens_with_scheme_and_aud(client, server):
    """iss/aud are not checked and the uri may carry a scheme (ccxt's http:// form)."""
    token = sdk_jwt(
        "main",
        f"GET {server.base_url}{ACCOUNTS}",
        extra={"iss": "coinbase-cloud", "aud": ["retail_rest_api_proxy"], "iat": int(time.time())},
    )
    response = client.get(ACCOUNTS, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_coinbase_accepts_uris_list_claim(client, server):
    """An Ed25519-style ``uris: [uri]`` claim is read like ``uri``."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": KEY_NAMES["main"], "nbf": now, "exp": now + 60}
    claims["uris"] = [f"GET api.coinbase.com{ACCOUNTS}"]
    token = jwt.encode(claims, KEYS["main"], algorithm="ES256", headers={"kid": KEY_NAMES["main"]})
    response = client.get(ACCOUNTS, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "make_header",
    [
        pytest.param(lambda host: None, id="missing"),
        pytest.param(lambda host: "Bearer not-a-jwt", id="garbage"),
        pytest.param(
            lambda host: "Bearer " + sdk_jwt("main", f"GET {host}{ACCOUNTS}", key=KEYS["other"]),
            id="bad-signature",
        ),
        pytest.param(
            lambda host: "Bearer " + sdk_jwt("main", f"GET {host}/api/v3/brokerage/orders"),
            id="wrong-uri-path",
        ),
        pytest.param(
            lambda host: "Bearer " + sdk_jwt("main", f"POST {host}{ACCOUNTS}"),
            id="wrong-uri-method",
        ),
        pytest.param(
            lambda host: "Bearer " + sdk_jwt("main", f"GET {host}{ACCOUNTS}", exp_in=-30),
            id="expired",
        ),
        pytest.param(
            lambda host: "Bearer " + sdk_jwt("other", f"GET {host}{ACCOUNTS}"), id="unknown-kid"
        ),
        pytest.param(
            lambda host: (
                "Bearer " + sdk_jwt("main", f"GET {host}{ACCOUNTS}", extra={"sub": "someone-else"})
            ),
            id="sub-not-kid",
        ),
    ],
)
def test_coinbase_refuses_bad_auth_with_plain_text_401(client, server, make_header):
    """Missing, unverifiable, expired or wrongly scoped JWTs get 401 ``Unauthorized`` as text."""
    header = make_header(_host(server))
    headers = {} if header is None else {"Authorization": header}
    response = client.get(ACCOUNTS, headers=headers)
    assert response.status_code == 401
    assert response.text == "Unauthorized"
    assert response.headers["content-type"].startswith("text/plain")
    assert server.request_count("cb-main") == 0


def test_coinbase_rate_limit_per_key_gives_429_with_retry_after_seconds(client, server):
    """Past the scenario's per-key limit the key gets 429 with Retry-After in seconds."""
    statuses = [_get_accounts(client, server, "limited").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = _get_accounts(client, server, "limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert _get_accounts(client, server, "main").status_code == 200  # other keys unaffected


def test_coinbase_public_product_price(client):
    """The public product route serves the scenario's mark as a string; unknown → JSON 404."""
    response = client.get("/api/v3/brokerage/market/products/BTC-USD")
    assert response.status_code == 200
    body = response.json()
    assert (body["product_id"], body["price"], body["base_currency_id"]) == (
        "BTC-USD",
        "60000",
        "BTC",
    )
    missing = client.get("/api/v3/brokerage/market/products/DOGE-USD")
    assert missing.status_code == 404
    assert set(missing.json()) == {"error", "error_details", "message"}


# ---------------------------------------------------------------- faults


def test_fault_times_counts_requests_then_passes():
    """``times = 2`` fails exactly the first two requests; later ones succeed."""
    with (
        _with_faults({"kind": "status_5xx", "status": 503, "times": 2}) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        statuses = [_get_accounts(client, server, "faulty").status_code for _ in range(4)]
        assert statuses == [503, 503, 200, 200]
        assert server.request_count("cb-faulty") == 4
        server.reset()
        assert _get_accounts(client, server, "faulty").status_code == 503


def test_fault_rules_apply_in_order_and_always_never_passes():
    """Rules are consumed in order; ``"always"`` applies to every later request."""
    with (
        _with_faults(
            {"kind": "rate_limit", "times": 1, "retry_after_ms": 2500},
            {"kind": "auth", "times": 1},
            {"kind": "status_5xx", "status": 500, "times": "always"},
        ) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        first, second, third, fourth = (_get_accounts(client, server, "faulty") for _ in range(4))
        assert first.status_code == 429
        assert first.headers["Retry-After"] == "3"  # seconds, rounded up
        assert (second.status_code, second.text) == (401, "Unauthorized")
        assert third.status_code == fourth.status_code == 500
        assert third.json()["error"] == "INTERNAL"


def test_coinbase_html_variants_for_429_and_malformed():
    """A 429 may be an HTML page, and a malformed fault is HTML with status 200."""
    with (
        _with_faults(
            {"kind": "rate_limit", "times": 1, "variant": "html"},
            {"kind": "malformed", "times": 1},
        ) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        limited = _get_accounts(client, server, "faulty")
        assert limited.status_code == 429
        assert limited.headers["content-type"].startswith("text/html")
        assert "Retry-After" in limited.headers
        html = _get_accounts(client, server, "faulty")
        assert html.status_code == 200
        assert html.headers["content-type"].startswith("text/html")


def test_malformed_truncated_and_bad_amount_bodies():
    """Truncated JSON does not parse; bad_amount and negative corrupt the first balance."""
    with (
        _with_faults(
            {"kind": "malformed", "times": 1, "variant": "truncated"},
            {"kind": "malformed", "times": 1, "variant": "bad_amount"},
            {"kind": "malformed", "times": 1, "variant": "negative"},
        ) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        truncated = _get_accounts(client, server, "faulty")
        assert truncated.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(truncated.content)
        nan = _get_accounts(client, server, "faulty").json()
        assert nan["accounts"][0]["available_balance"]["value"] == "NaN"
        negative = _get_accounts(client, server, "faulty").json()
        assert negative["accounts"][0]["available_balance"]["value"].startswith("-")


def test_reset_fault_drops_the_connection():
    """A ``reset`` fault closes the connection abruptly: the client gets a transport error."""
    with (
        _with_faults({"kind": "reset", "times": 1}) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        with pytest.raises(httpx.TransportError):
            _get_accounts(client, server, "faulty")
        assert _get_accounts(client, server, "faulty").status_code == 200


def test_timeout_fault_hangs_past_the_client_timeout_and_stops_promptly():
    """A ``timeout`` fault outlasts the client's timeout; stopping the server wakes it."""
    with (
        _with_faults({"kind": "timeout", "times": 1, "seconds": 60}) as server,
        httpx.Client(base_url=server.base_url, timeout=0.3) as client,
    ):
        with pytest.raises(httpx.ReadTimeout):
            _get_accounts(client, server, "faulty")
        assert _get_accounts(client, server, "faulty").status_code == 200


# ---------------------------------------------------------------- dYdX


def test_dydx_subaccount_is_wrapped_with_documented_fields(client):
    """The indexer body is ``{"subaccount": {...}}``; assets unsigned with side, perps signed."""
    response = client.get(f"/v4/addresses/{ADDRESS}/subaccountNumber/0")
    assert response.status_code == 200
    body = _json(response)
    assert set(body) == {"subaccount"}
    sub = body["subaccount"]
    assert set(sub) == {
        "address", "subaccountNumber", "equity", "freeCollateral", "openPerpetualPositions",
        "assetPositions", "marginEnabled", "updatedAtHeight", "latestProcessedBlockHeight",
    }  # fmt: skip
    assert sub["subaccountNumber"] == 0
    assert isinstance(sub["equity"], str)
    assert isinstance(sub["latestProcessedBlockHeight"], str)
    assert sub["assetPositions"]["USDC"] == {
        "symbol": "USDC",
        "side": "LONG",
        "size": "1000.5",
        "assetId": "0",
        "subaccountNumber": 0,
    }
    eth = sub["openPerpetualPositions"]["ETH-USD"]
    assert (eth["side"], eth["size"], eth["status"], eth["exitPrice"]) == (
        "SHORT",
        "-1.5",
        "OPEN",
        None,
    )
    assert set(eth) >= {
        "market", "maxSize", "entryPrice", "realizedPnl", "createdAt", "createdAtHeight",
        "sumOpen", "sumClose", "netFunding", "unrealizedPnl", "closedAt", "subaccountNumber",
    }  # fmt: skip
    assert sub["openPerpetualPositions"]["BTC-USD"]["size"] == "0.25"


def test_dydx_short_asset_position_keeps_unsigned_size(client):
    """A SHORT asset position is an unsigned size with side SHORT."""
    sub = client.get(f"/v4/addresses/{ADDRESS}/subaccountNumber/3").json()["subaccount"]
    assert sub["assetPositions"]["USDC"]["side"] == "SHORT"
    assert sub["assetPositions"]["USDC"]["size"] == "5"
    assert sub["openPerpetualPositions"] == {}


def test_dydx_unknown_subaccount_is_404_with_indexer_message(client):
    """An unknown address/subaccount gets the indexer's 404 ``errors`` body."""
    response = client.get(f"/v4/addresses/{ADDRESS}/subaccountNumber/7")
    assert response.status_code == 404
    assert response.json() == {
        "errors": [{"msg": f"No subaccount found with address {ADDRESS} and subaccountNumber 7"}]
    }


def test_dydx_invalid_subaccount_number_is_400(client):
    """A subaccount number out of range is an express-validator style 400."""
    response = client.get(f"/v4/addresses/{ADDRESS}/subaccountNumber/128001")
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["param"] == "subaccountNumber"
    assert "less than 128001" in error["msg"]


def test_dydx_rate_limit_fault_is_429_with_retry_after_in_ms():
    """dYdX's 429 says Too many requests, Retry-After in milliseconds, RateLimit-* headers."""
    with (
        _with_faults({"kind": "rate_limit", "times": 1, "retry_after_ms": 750}, venue="dydx") as s,
        httpx.Client(base_url=s.base_url) as client,
    ):
        before_ms = int(time.time() * 1000)
        response = client.get(f"/v4/addresses/{ADDRESS}/subaccountNumber/0")
        assert response.status_code == 429
        assert response.json() == {"errors": [{"msg": "Too many requests"}]}
        assert response.headers["Retry-After"] == "750"
        assert response.headers["RateLimit-Remaining"] == "0"
        assert int(response.headers["RateLimit-Reset"]) >= before_ms + 750
        assert client.get(f"/v4/addresses/{ADDRESS}/subaccountNumber/0").status_code == 200


def test_dydx_scenario_rate_limit_is_shared_per_client_ip():
    """With a dYdX rate limit every address shares the client's budget; headers count down."""
    scenario = parse_scenario(
        {
            "rate_limits": {"dydx": {"requests": 2, "window_ms": 60_000}},
            "accounts": [
                {"id": "a", "venue": "dydx", "address": ADDRESS, "subaccount": 0},
                {"id": "b", "venue": "dydx", "address": ADDRESS, "subaccount": 1},
            ],
        }
    )
    with SandboxServer(scenario) as server, httpx.Client(base_url=server.base_url) as client:
        first = client.get(f"/v4/addresses/{ADDRESS}/subaccountNumber/0")
        second = client.get(f"/v4/addresses/{ADDRESS}/subaccountNumber/1")
        third = client.get(f"/v4/addresses/{ADDRESS}/subaccountNumber/0")
        assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
        assert (first.headers["RateLimit-Remaining"], second.headers["RateLimit-Remaining"]) == (
            "1",
            "0",
        )
        assert 0 < int(third.headers["Retry-After"]) <= 60_000


def test_dydx_status_and_malformed_faults():
    """dYdX 5xx faults use the ``errors`` body; malformed bad_amount puts NaN in a size."""
    with (
        _with_faults(
            {"kind": "status_5xx", "status": 500, "times": 1},
            {"kind": "malformed", "times": 1, "variant": "bad_amount"},
            venue="dydx",
        ) as server,
        httpx.Client(base_url=server.base_url) as client,
    ):
        url = f"/v4/addresses/{ADDRESS}/subaccountNumber/0"
        failed = client.get(url)
        assert failed.status_code == 500
        assert failed.json() == {"errors": [{"msg": "Internal Server Error"}]}
        corrupt = client.get(url).json()
        assert corrupt["subaccount"]["assetPositions"]["USDC"]["size"] == "NaN"


# ---------------------------------------------------------------- the built-in scenario


def test_builtin_scenario_from_path_serves_cb_main_after_two_503s():
    """SandboxServer takes a path; built-in cb-main fails twice, then answers the demo key."""
    name = (DATA_DIR / "keys" / "cb-main.name").read_text().strip()
    private = serialization.load_pem_private_key(
        (DATA_DIR / "keys" / "cb-main.pem").read_bytes(), password=None
    )
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    with SandboxServer(DEFAULT_SCENARIO) as server, httpx.Client(base_url=server.base_url) as c:
        KEY_NAMES["builtin"] = name
        try:
            statuses = []
            for _ in range(3):
                token = sdk_jwt("builtin", f"GET {_host(server)}{ACCOUNTS}", key=private)
                statuses.append(
                    c.get(ACCOUNTS, headers={"Authorization": f"Bearer {token}"}).status_code
                )
        finally:
            del KEY_NAMES["builtin"]
        assert statuses == [503, 503, 200]
