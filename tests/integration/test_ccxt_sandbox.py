"""``ccxt:<id>`` accounts through ccxt's async API, with ccxt's URLs pointed at the sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from infra.sandbox import DATA_DIR, SandboxServer, parse_scenario
from infra.venues.ccxt_venue import CcxtClient, CcxtUnavailable, rebase_urls
from infra.venues.errors import VenueAuthError, VenueUnavailable

KEYS = DATA_DIR / "keys"
KRAKEN_KEY = (KEYS / "kraken-main.key").read_text().strip()
KRAKEN_SECRET = (KEYS / "kraken-main.secret").read_text().strip()
BINANCE_KEY = (KEYS / "binance-main.key").read_text().strip()
BINANCE_SECRET = (KEYS / "binance-main.secret").read_text().strip()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    """A sandbox with one Kraken and one Binance account (latency 0)."""
    scenario = parse_scenario(
        {
            "latency_ms": 0,
            "prices": {"BTC": "60000", "ETH": "3000"},
            "accounts": [
                {
                    "id": "kr",
                    "venue": "kraken",
                    "api_key": KRAKEN_KEY,
                    "api_secret_file": str(KEYS / "kraken-main.secret"),
                    "balances": [
                        {"asset": "XXBT", "balance": "0.5000000001", "hold_trade": "0.1"},
                        {"asset": "ZUSD", "balance": "2500.1234"},
                        {"asset": "ETH.F", "balance": "0.1"},
                    ],
                },
                {
                    "id": "bn",
                    "venue": "binance",
                    "api_key": BINANCE_KEY,
                    "api_secret_file": str(KEYS / "binance-main.secret"),
                    "balances": [
                        {"asset": "BTC", "free": "0.5", "locked": "0.1000000001"},
                        {"asset": "USDT", "free": "1250", "locked": "0"},
                    ],
                },
            ],
        },
        source="ccxt-test",
        base_dir=KEYS,
    )
    with SandboxServer(scenario) as server:
        yield server


def test_ccxt_kraken_reads_exact_totals_from_the_sandbox(sandbox: SandboxServer) -> None:
    """ccxt's kraken (Assets, AssetPairs, BalanceEx) gives totals as exact Decimals."""
    client = CcxtClient(
        "kraken",
        api_key=KRAKEN_KEY,
        api_secret=KRAKEN_SECRET,
        base_url=sandbox.base_url,
        timeout=5,
    )
    totals = client.fetch_balances()
    assert totals["BTC"] == Decimal("0.5000000001")
    assert totals["USD"] == Decimal("2500.1234")
    assert all(isinstance(v, Decimal) for v in totals.values())


def test_ccxt_binance_reads_exact_totals_from_the_sandbox(sandbox: SandboxServer) -> None:
    """ccxt's binance (spot exchangeInfo, /api/v3/account) gives free + locked exactly."""
    client = CcxtClient(
        "binance",
        api_key=BINANCE_KEY,
        api_secret=BINANCE_SECRET,
        base_url=sandbox.base_url,
        timeout=5,
    )
    totals = client.fetch_balances()
    assert totals["BTC"] == Decimal("0.6000000001")
    assert totals["USDT"] == Decimal("1250")


def test_ccxt_auth_failure_is_an_auth_error(sandbox: SandboxServer) -> None:
    """A wrong secret is refused by the sandbox and mapped to kind auth, secret not echoed."""
    client = CcxtClient(
        "binance",
        api_key=BINANCE_KEY,
        api_secret="0" * 64,
        base_url=sandbox.base_url,
        timeout=5,
    )
    with pytest.raises(VenueAuthError) as info:
        client.fetch_balances()
    assert "0" * 16 not in str(info.value)


def test_ccxt_unreachable_venue_is_unavailable() -> None:
    """Nothing listening → kind unavailable, never an empty balance."""
    client = CcxtClient(
        "kraken",
        api_key=KRAKEN_KEY,
        api_secret=KRAKEN_SECRET,
        base_url="http://127.0.0.1:9",
        timeout=2,
    )
    with pytest.raises(VenueUnavailable):
        client.fetch_balances()


def test_unknown_ccxt_exchange_is_refused() -> None:
    """An id ccxt does not know is a configuration problem."""
    with pytest.raises(CcxtUnavailable):
        CcxtClient("no_such_venue", api_key=None, api_secret=None, base_url=None, timeout=1)


def test_rebase_keeps_paths_and_replaces_hosts() -> None:
    """Every API URL keeps its path; only scheme and host change."""
    urls = {
        "public": "https://api.binance.com/api/v3",
        "sapi": {"v1": "https://api.binance.com/sapi/v1"},
    }
    assert rebase_urls(urls, "http://127.0.0.1:9000") == {
        "public": "http://127.0.0.1:9000/api/v3",
        "sapi": {"v1": "http://127.0.0.1:9000/sapi/v1"},
    }
