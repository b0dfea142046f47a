"""Issue 4's whole roster: Coinbase, dYdX, Kraken, Binance, a ccxt venue, an HTTP book and live
Coinbase marks, reconciled against the sandbox by ``recon reconcile`` and by real workers."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.sandbox import DATA_DIR, SandboxServer, parse_scenario
from tests.integration.workers_harness import (  # noqa: F401  (fixtures)
    CeleryStack,
    audit_database_fixture,
    audit_rows,
    process_environment,
    recovery_columns,
    redis_database_fixture,
    redis_url_fixture,
)
from tests.support import DEMO_KEYS, Desk, desk_fixture, reports_by_account  # noqa: F401

KEYS = DATA_DIR / "keys"
KRAKEN_KEY = (KEYS / "kraken-main.key").read_text().strip()
#: The ccxt account has a Kraken key of its own: two clients sharing one key would race each
#: other's nonces (Kraken refuses a nonce not above the key's last one).
CCXT_KRAKEN_KEY = "ccxt-kraken-test-key"
CCXT_KRAKEN_SECRET = base64.b64encode(b"recon-test-ccxt-kraken-secret-0123456789abcdef").decode()
BINANCE_KEY = (KEYS / "binance-main.key").read_text().strip()
#: Live marks served by the sandbox's public Coinbase product route (the roster sets none).
MARKS = {"BTC": "60000", "ETH": "3000"}
BOOK = {
    "cb": {"BTC": "1.25", "USD": "1000"},
    "dx": {"USDC": "10000", "ETH/USD:USDC": "-1.5"},
    "kr": {"BTC": "0.5", "USD": "2500.1234", "ETH": "3.35"},
    "bn": {"BTC": "0.6", "USDT": "1250"},
    "cx": {"BTC": "0.25"},
}
EXPECTED = {"cb": "SUCCESS", "dx": "SUCCESS", "kr": "SUCCESS", "bn": "WARNING", "cx": "CRITICAL"}


def scenario_data() -> dict[str, Any]:
    key = DEMO_KEYS["cb-main"]
    return {
        "latency_ms": 0,
        "prices": MARKS,
        "accounts": [
            {
                "id": "cb",
                "venue": "coinbase",
                "key_name": key.key_name,
                "public_key_file": str(key.public_pem),
                "balances": [
                    {
                        "currency": "BTC",
                        "available": "1",
                        "hold": "0.25",
                        "type": "ACCOUNT_TYPE_CRYPTO",
                    },
                    {
                        "currency": "USD",
                        "available": "1000",
                        "hold": "0",
                        "type": "ACCOUNT_TYPE_FIAT",
                    },
                ],
            },
            {
                "id": "dx",
                "venue": "dydx",
                "address": "dydx1allvenues00000000000000000000000000qz",
                "subaccount": 0,
                "assets": [{"symbol": "USDC", "side": "LONG", "size": "10000"}],
                "perpetuals": [{"market": "ETH-USD", "side": "SHORT", "size": "1.5"}],
            },
            {
                "id": "kr",
                "venue": "kraken",
                "api_key": KRAKEN_KEY,
                "api_secret_file": str(KEYS / "kraken-main.secret"),
                "balances": [
                    {"asset": "XXBT", "balance": "0.5"},
                    {"asset": "ZUSD", "balance": "2500.1234"},
                    {"asset": "XETH", "balance": "3.25"},
                    {"asset": "ETH.F", "balance": "0.1"},
                ],
            },
            {
                "id": "kr-ccxt",
                "venue": "kraken",
                "api_key": CCXT_KRAKEN_KEY,
                "api_secret": CCXT_KRAKEN_SECRET,
                "balances": [
                    {"asset": "XXBT", "balance": "0.5"},
                    {"asset": "ZUSD", "balance": "2500.1234"},
                ],
            },
            {
                # Binance holds 0.01 BTC more than the book: 600 USD at the live mark, 1.6 %.
                "id": "bn",
                "venue": "binance",
                "api_key": BINANCE_KEY,
                "api_secret_file": str(KEYS / "binance-main.secret"),
                "balances": [
                    {"asset": "BTC", "free": "0.51", "locked": "0.1"},
                    {"asset": "USDT", "free": "1250", "locked": "0"},
                ],
            },
        ],
    }


class BookHandler(http.server.BaseHTTPRequestHandler):
    """Serves the book JSON at /balances (the http book source's contract)."""

    body = json.dumps({"as_of": "2026-11-24T00:00:00Z", "accounts": BOOK}).encode()

    def do_GET(self) -> None:
        if self.path != "/balances":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def book_url() -> Iterator[str]:
    """A loopback HTTP server holding the book."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BookHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/balances"
    finally:
        server.shutdown()
        server.server_close()


def write_roster(desk: Desk, sandbox: SandboxServer, book_url: str) -> None:
    """Every venue kind, the HTTP book and live marks from the sandbox's Coinbase route."""
    base = sandbox.base_url
    key = DEMO_KEYS["cb-main"]
    ccxt_key = desk.folder / "ccxt-kraken.key"
    ccxt_secret = desk.folder / "ccxt-kraken.secret"
    ccxt_key.write_text(CCXT_KRAKEN_KEY, encoding="utf-8")
    ccxt_secret.write_text(CCXT_KRAKEN_SECRET, encoding="utf-8")
    desk.roster_path.write_text(
        f"""
[policy]
threshold_usd = "100"
critical_usd = "10000"

[book]
source = "http"
url = "{book_url}"

[prices]
source = "coinbase"
base_url = "{base}"

[[accounts]]
id = "cb"
exchange = "coinbase"
base_url = "{base}"
api_key = "file:{key.name_file}"
api_secret = "file:{key.private_pem}"

[[accounts]]
id = "dx"
exchange = "dydx"
base_url = "{base}"
address = "dydx1allvenues00000000000000000000000000qz"
subaccount = 0

[[accounts]]
id = "kr"
exchange = "kraken"
base_url = "{base}"
api_key = "file:{KEYS / "kraken-main.key"}"
api_secret = "file:{KEYS / "kraken-main.secret"}"
asset_map = {{ "ETH.F" = "ETH" }}

[[accounts]]
id = "bn"
exchange = "binance"
base_url = "{base}"
api_key = "file:{KEYS / "binance-main.key"}"
api_secret = "file:{KEYS / "binance-main.secret"}"

[[accounts]]
id = "cx"
exchange = "ccxt:kraken"
base_url = "{base}"
api_key = "file:{KEYS / "kraken-main.key"}"
api_secret = "file:{KEYS / "kraken-main.secret"}"
""",
        encoding="utf-8",
    )


def check_cycle(cycle: dict[str, Any]) -> None:
    reports = reports_by_account(cycle["reports"])
    assert {a: r["status"] for a, r in reports.items()} == EXPECTED, {
        a: (r["status"], r["error"], r["discrepancies"]) for a, r in reports.items()
    }
    assert reports["kr"]["exchange_balances"] == {"BTC": "0.5", "ETH": "3.35", "USD": "2500.1234"}
    (break_,) = reports["bn"]["discrepancies"]
    assert (break_["asset"], break_["diff"], break_["value_usd"]) == ("BTC", "0.01", "600")
    # ccxt:kraken reads its own Kraken account (0.5 BTC, 2500.1234 USD): the book says 0.25 BTC.
    # Breaks were looked at twice; the sandbox still shows them: confirmed.
    assert {a: (r["recovery"] or {}).get("status") for a, r in reports.items()} == {
        "cb": None,
        "dx": None,
        "kr": None,
        "bn": "FAILED",
        "cx": "FAILED",
    }
    missing = {d["asset"]: d for d in reports["cx"]["discrepancies"]}
    assert missing["USD"]["missing_from"] == "local"
    assert reports["cx"]["exchange_balances"]["BTC"] == "0.5"


@pytest.fixture
def sandbox(desk: Desk) -> Iterator[SandboxServer]:
    scenario = parse_scenario(scenario_data(), source="all-venues", base_dir=desk.folder)
    with SandboxServer(scenario) as server:
        yield server


def test_every_venue_kind_reconciles_through_the_cli(
    desk: Desk, sandbox: SandboxServer, book_url: str
) -> None:
    """recon reconcile: four native venues, ccxt:kraken, an HTTP book and live marks."""
    write_roster(desk, sandbox, book_url)
    result, cycle = desk.reconcile_json("--all")
    assert result.exit_code == 4, result.stderr
    check_cycle(cycle)


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize(
    ("confirm_delay", "confirm_joins"),
    [
        # No delay: the join confirms the breaks itself (no second chord).
        ("0", 0),
        # A delay (longer than any join takes to compare and write): a second chord after
        # it, whose join (recon.confirm_breaks) confirms.
        ("2", 1),
    ],
    ids=["confirmed-in-the-join", "confirmed-by-a-second-chord"],
)
def test_every_venue_kind_reconciles_through_the_workers(
    desk: Desk,
    sandbox: SandboxServer,
    book_url: str,
    tmp_path: Path,
    audit_database: str,
    redis_url: str,
    confirm_delay: str,
    confirm_joins: int,
) -> None:
    """recon.reconcile_all by name on a real worker: the same roster, the same reports, the
    breaks confirmed alike whichever way the second look runs."""
    write_roster(desk, sandbox, book_url)
    variables = process_environment(
        desk,
        database_url=audit_database,
        redis_url=redis_url,
        RECONCILIATION_CONFIRM_DELAY_SECONDS=confirm_delay,
    )
    with CeleryStack(tmp_path, variables, redis_url) as stack:
        (worker,) = stack.workers("w1")
        cycle = stack.client.send_task("recon.reconcile_all").get(timeout=60, interval=0.05)
    check_cycle(cycle)
    assert sorted(row["account_id"] for row in audit_rows(audit_database)) == sorted(EXPECTED)
    assert recovery_columns(audit_database) == {"bn": "FAILED", "cx": "FAILED"}
    assert worker.count("Task recon.confirm_breaks[") == confirm_joins * 2  # received, succeeded
