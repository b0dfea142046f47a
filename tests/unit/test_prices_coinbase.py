"""Live Coinbase marks: exact, perps at base, TTL-cached, static overrides, no mark → unpriced."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import pytest

from domain.policy import PriceTable
from infra.prices.coinbase import CoinbasePrices, product_id
from infra.sandbox import SandboxServer
from infra.sandbox.scenario import Scenario

PRODUCTS = "/api/v3/brokerage/market/products/"
MARKS = {"BTC": "67060.01", "ETH": "3012.5", "SOL": "151.2"}

Handler = Callable[[httpx.Request], httpx.Response]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class Venue:
    """A MockTransport handler serving Coinbase Product bodies, counting requests per product."""

    def __init__(self, marks: dict[str, object] | None = None) -> None:
        self.marks: dict[str, object] = dict(MARKS if marks is None else marks)
        self.paths: list[str] = []
        self.override: Handler | None = None
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.paths.append(request.url.path)
        if self.override is not None:
            return self.override(request)
        product = request.url.path.removeprefix(PRODUCTS)
        base, _, quote = product.partition("-")
        if not request.url.path.startswith(PRODUCTS) or quote != "USD" or base not in self.marks:
            body = {"error": "NOT_FOUND", "error_details": "ProductID is invalid", "message": "x"}
            return httpx.Response(404, json=body)
        return httpx.Response(
            200,
            json={
                "product_id": product,
                "price": self.marks[base],
                "base_currency_id": base,
                "quote_currency_id": "USD",
                "status": "online",
            },
        )

    def count(self, product: str) -> int:
        return self.paths.count(PRODUCTS + product)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def venue() -> Venue:
    return Venue()


@pytest.fixture
def make_prices(clock: FakeClock, venue: Venue) -> Iterator[Callable[..., CoinbasePrices]]:
    clients: list[httpx.Client] = []

    def make(**kwargs: object) -> CoinbasePrices:
        http = httpx.Client(transport=httpx.MockTransport(venue))
        clients.append(http)
        options: dict[str, object] = {
            "base_url": "https://api.coinbase.test",
            "timeout": 2.0,
            "clock": clock,
            "requests_per_second": 1e6,
        }
        options.update(kwargs)
        return CoinbasePrices(http, **options)  # type: ignore[arg-type]

    yield make
    for http in clients:
        http.close()


def test_marks_come_from_the_public_product_endpoint_exactly(make_prices, venue) -> None:
    """Each base asset's mark is the Product's price string, as an exact Decimal."""
    table = make_prices().prices_for(["BTC", "ETH"])
    assert table.usd("BTC") == Decimal("67060.01")
    assert table.usd("ETH") == Decimal("3012.5")
    assert sorted(venue.paths) == [PRODUCTS + "BTC-USD", PRODUCTS + "ETH-USD"]


def test_a_price_sent_as_a_json_number_is_exact(make_prices, venue) -> None:
    """A JSON number price is parsed exactly, never through float."""
    venue.override = lambda _r: httpx.Response(
        200,
        content=b'{"product_id": "BTC-USD", "price": 67060.0100000000001}',
        headers={"Content-Type": "application/json"},
    )
    assert make_prices().prices_for(["BTC"]).usd("BTC") == Decimal("67060.0100000000001")


def test_a_perp_is_valued_at_its_base(make_prices, venue) -> None:
    """ETH/USD:USDC and ETH share one ETH-USD fetch; the perp's price is ETH's."""
    table = make_prices().prices_for(["ETH/USD:USDC", "ETH", "SOL/USD:USDC"])
    assert table.usd("ETH/USD:USDC") == Decimal("3012.5")
    assert table.usd("SOL/USD:USDC") == Decimal("151.2")
    assert venue.count("ETH-USD") == 1
    assert len(venue.paths) == 2


def test_usd_and_stablecoins_are_one_and_never_fetched(make_prices, venue) -> None:
    """USD, USDC and USDT are 1 without any request."""
    table = make_prices().prices_for(["USD", "USDC", "USDT"])
    assert [table.usd(a) for a in ("USD", "USDC", "USDT")] == [Decimal(1)] * 3
    assert venue.paths == []


def test_static_marks_override_live_ones_and_are_not_fetched(make_prices, venue) -> None:
    """A mark set in [prices] wins over Coinbase (even for USDC) and is never requested."""
    static = PriceTable({"BTC": Decimal(50000), "USDC": Decimal("0.999"), "XYZ": Decimal(2)})
    table = make_prices(static=static).prices_for(["BTC", "USDC", "ETH", "XYZ"])
    assert table.usd("BTC") == Decimal(50000)
    assert table.usd("USDC") == Decimal("0.999")
    assert table.usd("XYZ") == Decimal(2)
    assert table.usd("ETH") == Decimal("3012.5")
    assert venue.paths == [PRODUCTS + "ETH-USD"]


def test_each_mark_is_fetched_once_per_ttl(make_prices, venue, clock) -> None:
    """Within the TTL every cycle reuses the mark; at the TTL it is fetched again, updated."""
    prices = make_prices(ttl_seconds=30)
    assets = ["BTC", "ETH/USD:USDC", "USD"]
    for _ in range(5):
        assert prices.prices_for(assets).usd("BTC") == Decimal("67060.01")
        clock.now += 5.9
    assert venue.count("BTC-USD") == 1
    assert venue.count("ETH-USD") == 1
    venue.marks["BTC"] = "70000"
    clock.now += 0.6  # 30 s after the fetch
    assert prices.prices_for(assets).usd("BTC") == Decimal(70000)
    assert venue.count("BTC-USD") == 2
    assert venue.count("ETH-USD") == 2


def test_an_asset_new_to_a_cycle_is_fetched_alone(make_prices, venue) -> None:
    """Cached bases are not re-requested when another asset joins the cycle."""
    prices = make_prices()
    prices.prices_for(["BTC"])
    table = prices.prices_for(["BTC", "SOL"])
    assert table.usd("SOL") == Decimal("151.2")
    assert venue.paths == [PRODUCTS + "BTC-USD", PRODUCTS + "SOL-USD"]


def test_an_unknown_product_is_unpriced_and_warned_once_per_ttl(
    make_prices, venue, clock, caplog
) -> None:
    """A 404 leaves the asset unpriced (never 0), asked and logged once per TTL."""
    caplog.set_level(logging.WARNING, logger="infra.prices.coinbase")
    prices = make_prices(ttl_seconds=30)
    for _ in range(3):
        table = prices.prices_for(["DOGE", "BTC"])
        assert table.usd("DOGE") is None
        assert table.usd("BTC") == Decimal("67060.01")
    assert venue.count("DOGE-USD") == 1
    warnings = [r for r in caplog.records if "DOGE" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "config" in warnings[0].getMessage()
    clock.now += 30
    assert prices.prices_for(["DOGE"]).usd("DOGE") is None
    assert venue.count("DOGE-USD") == 2
    assert len([r for r in caplog.records if "DOGE" in r.getMessage()]) == 2


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Bad gateway</body></html>",
        b'{"product_id": "BTC-USD", "price": "670',
        b'{"product_id": "BTC-USD", "price": "0"}',
        b'{"product_id": "BTC-USD", "price": "0.000"}',
        b'{"product_id": "BTC-USD", "price": "-12345.678"}',
        b'{"product_id": "BTC-USD", "price": "NaN"}',
        b'{"product_id": "BTC-USD", "price": NaN}',
        b'{"product_id": "BTC-USD", "price": "1e400"}',
        b'{"product_id": "BTC-USD", "price": ""}',
        b'{"product_id": "BTC-USD", "price": true}',
        b'{"product_id": "BTC-USD"}',
        b'{"product_id": "ETH-USD", "price": "3000"}',
        b'{"product_id": "BTC-USD", "quote_currency_id": "EUR", "price": "60000"}',
        b'["BTC-USD", "60000"]',
    ],
    ids=[
        "html",
        "truncated",
        "zero",
        "zero-scaled",
        "negative",
        "nan-text",
        "nan",
        "absurd",
        "empty",
        "bool",
        "no-price",
        "other-product",
        "other-quote",
        "array",
    ],
)
def test_a_malformed_product_leaves_the_asset_unpriced(make_prices, venue, caplog, body) -> None:
    """A body that is not a Product with a positive finite price: unpriced, and no price logged."""
    caplog.set_level(logging.WARNING, logger="infra.prices.coinbase")
    venue.override = lambda _r: httpx.Response(
        200, content=body, headers={"Content-Type": "application/json"}
    )
    table = make_prices().prices_for(["BTC", "USDC"])
    assert table.usd("BTC") is None
    assert "BTC" not in table.marks
    assert table.usd("USDC") == Decimal(1)
    (record,) = caplog.records
    assert "malformed" in record.getMessage()
    assert "12345" not in record.getMessage()


def _raise(error: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("failed", request=request)

    return handler


@pytest.mark.parametrize(
    ("respond", "kind"),
    [
        (_raise(httpx.ReadTimeout), "timeout"),
        (_raise(httpx.ConnectError), "unavailable"),
        (lambda _r: httpx.Response(500, json={"error": "INTERNAL"}), "unavailable"),
        (lambda _r: httpx.Response(429, text="<html>Too Many Requests</html>"), "rate_limited"),
        (lambda _r: httpx.Response(401, text="Unauthorized"), "auth"),
    ],
    ids=["timeout", "refused", "500", "429-html", "401"],
)
def test_a_failed_fetch_leaves_the_asset_unpriced(
    make_prices, venue, caplog, respond, kind
) -> None:
    """Timeouts, refusals, 5xx, 429 and 401 leave the asset unpriced; the kind is logged."""
    caplog.set_level(logging.WARNING, logger="infra.prices.coinbase")
    venue.override = respond
    prices = make_prices()
    for _ in range(2):
        assert prices.prices_for(["BTC"]).usd("BTC") is None
    assert len(venue.paths) == 1  # the failure is cached for the TTL too
    (record,) = caplog.records
    assert kind in record.getMessage()


def test_codes_that_cannot_name_a_product_are_not_requested(make_prices, venue, caplog) -> None:
    """ETH.F or lower-case codes are unpriced without a request (and warned once)."""
    caplog.set_level(logging.WARNING, logger="infra.prices.coinbase")
    prices = make_prices()
    for _ in range(2):
        table = prices.prices_for(["ETH.F", "cbBTC", "../../accounts"])
        assert table.usd("ETH.F") is None
        assert table.usd("cbBTC") is None
    assert venue.paths == []
    assert len(caplog.records) == 3


def test_bases_are_fetched_concurrently(make_prices, venue) -> None:
    """Two product requests are in flight at once (a barrier of two only opens if they are)."""
    barrier = threading.Barrier(2, timeout=5)
    plain = Venue()

    def both_at_once(request: httpx.Request) -> httpx.Response:
        barrier.wait()
        return plain(request)

    venue.override = both_at_once
    table = make_prices(max_concurrency=2).prices_for(["BTC", "ETH"])
    assert table.usd("BTC") == Decimal("67060.01")
    assert table.usd("ETH") == Decimal("3012.5")


def test_request_starts_are_paced_to_the_rate_limit(make_prices, venue) -> None:
    """At 10 requests/s, N request starts wait 0.1 s more each (fake clock and sleep)."""
    waits: list[float] = []
    lock = threading.Lock()

    def sleep(seconds: float) -> None:
        with lock:
            waits.append(seconds)

    marks = {f"C{i}": str(i + 1) for i in range(6)}
    venue.marks = marks
    table = make_prices(requests_per_second=10, sleep=sleep).prices_for(marks)
    assert all(table.usd(code) == Decimal(price) for code, price in marks.items())
    assert sorted(waits) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_product_ids() -> None:
    """A base names its USD product only when it is upper-case letters and digits."""
    assert product_id("BTC") == "BTC-USD"
    assert product_id("1INCH") == "1INCH-USD"
    assert product_id("ETH.F") is None
    assert product_id("btc") is None
    assert product_id("") is None


def test_constructor_refuses_nonsense_settings() -> None:
    """Non-positive timeout, concurrency or rate, and negative TTL, are programming errors."""
    with httpx.Client() as http:
        for kwargs in (
            {"timeout": 0.0},
            {"timeout": 1.0, "ttl_seconds": -1.0},
            {"timeout": 1.0, "max_concurrency": 0},
            {"timeout": 1.0, "requests_per_second": 0.0},
        ):
            with pytest.raises(ValueError):
                CoinbasePrices(http, **kwargs)  # type: ignore[arg-type]


# --- against the sandbox venue --------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    scenario = Scenario(prices={"BTC": Decimal("60000"), "ETH": Decimal("3000.25")})
    with SandboxServer(scenario) as server:
        yield server


@pytest.fixture
def counted_http() -> Iterator[tuple[httpx.Client, list[str]]]:
    paths: list[str] = []

    def record(request: httpx.Request) -> None:
        paths.append(request.url.path)

    with httpx.Client(event_hooks={"request": [record]}) as http:
        yield http, paths


def test_sandbox_marks_perps_and_unknown_products(sandbox, counted_http) -> None:
    """Over real HTTP: marks from the scenario, a perp at its base, an unlisted asset unpriced."""
    http, paths = counted_http
    prices = CoinbasePrices(http, base_url=sandbox.base_url, timeout=5.0, requests_per_second=1e6)
    table = prices.prices_for(["BTC", "ETH/USD:USDC", "DOGE", "USD"])
    assert table.usd("BTC") == Decimal("60000")
    assert table.usd("ETH/USD:USDC") == Decimal("3000.25")
    assert table.usd("DOGE") is None
    assert table.usd("USD") == Decimal(1)
    assert sorted(paths) == sorted(PRODUCTS + p for p in ("BTC-USD", "DOGE-USD", "ETH-USD"))


def test_sandbox_marks_are_cached_for_the_ttl(sandbox, counted_http, clock) -> None:
    """Over real HTTP, one request per asset per TTL (fake clock)."""
    http, paths = counted_http
    prices = CoinbasePrices(
        http,
        base_url=sandbox.base_url + "/",
        timeout=5.0,
        ttl_seconds=30,
        clock=clock,
        requests_per_second=1e6,
    )
    for _ in range(3):
        assert prices.prices_for(["BTC", "DOGE"]).usd("BTC") == Decimal("60000")
        clock.now += 10
    assert sorted(paths) == [PRODUCTS + "BTC-USD", PRODUCTS + "DOGE-USD"]
    prices.prices_for(["BTC", "DOGE"])
    assert len(paths) == 4


def test_sandbox_product_body_is_what_the_reference_documents(sandbox, counted_http) -> None:
    """The sandbox's Product carries the fields the adapter checks (product_id, quote, price)."""
    http, _ = counted_http
    body = json.loads(http.get(sandbox.base_url + PRODUCTS + "BTC-USD").content)
    assert body["product_id"] == "BTC-USD"
    assert body["quote_currency_id"] == "USD"
    assert isinstance(body["price"], str)
