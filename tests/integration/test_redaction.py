"""Redaction: a full run at DEBUG with known balances and secrets leaks neither into any log
line, alert or error message."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from infra.sandbox import DATA_DIR
from tests.support import (
    DEMO_KEYS,
    Desk,
    clean_environ,
    coin,
    coinbase_venue,
    desk_fixture,  # noqa: F401  (the ``desk`` fixture)
    dydx_venue,
    fault,
    recon_script,
)

KEYS = DATA_DIR / "keys"
#: Distinctive amounts that appear only as balances (venue side and book side).
VENUE_AMOUNTS = ("7391.4628", "0.83917264", "52817.0931")
BOOK_AMOUNTS = ("7391.4627", "0.73917264", "41028.5512")
WEBHOOK_SECRET = "whsec-redaction-5Qz81Lm"


class Receiver(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        Receiver.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def webhook() -> Iterator[str]:
    Receiver.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def secrets() -> list[str]:
    """Every credential of the run: key names, private keys (each PEM line), the webhook key."""
    key = DEMO_KEYS["cb-main"]
    values = [key.key_name, WEBHOOK_SECRET]
    for name in ("kraken-main", "binance-main"):
        values += [(KEYS / f"{name}.key").read_text().strip()]
        values += [(KEYS / f"{name}.secret").read_text().strip()]
    values += [
        line
        for line in key.private_pem.read_text().splitlines()
        if line and not line.startswith("-----")
    ]
    return values


def test_debug_run_leaks_no_balance_and_no_secret(desk: Desk, webhook: str, tmp_path: Path) -> None:
    """At DEBUG, with breaks (alerts) and a failing venue (error messages), no log line, alert
    or error message carries a planted balance or a secret."""
    desk.start(
        coinbase_venue(
            "cb-r",
            balances=[
                coin("BTC", VENUE_AMOUNTS[1]),
                coin("USD", VENUE_AMOUNTS[0], kind="ACCOUNT_TYPE_FIAT"),
            ],
        ),
        dydx_venue(
            "dx-r",
            subaccount=0,
            assets=[{"symbol": "USDC", "side": "LONG", "size": VENUE_AMOUNTS[2]}],
        ),
        coinbase_venue(
            "cb-down",
            key="cb-desk2",
            balances=[coin("BTC", VENUE_AMOUNTS[1])],
            faults=[fault("malformed", "always", variant="bad_amount")],
        ),
        {
            "id": "kr-r",
            "venue": "kraken",
            "api_key": (KEYS / "kraken-main.key").read_text().strip(),
            "api_secret_file": str(KEYS / "kraken-main.secret"),
            "balances": [{"asset": "XXBT", "balance": VENUE_AMOUNTS[1]}],
        },
        {
            "id": "bn-r",
            "venue": "binance",
            "api_key": (KEYS / "binance-main.key").read_text().strip(),
            "api_secret_file": str(KEYS / "binance-main.secret"),
            "balances": [{"asset": "USDT", "free": VENUE_AMOUNTS[0], "locked": "0"}],
        },
        book={
            "kr-r": {"BTC": BOOK_AMOUNTS[1]},
            "bn-r": {"USDT": BOOK_AMOUNTS[0]},
            "cb-r": {"BTC": BOOK_AMOUNTS[1], "USD": BOOK_AMOUNTS[0]},
            "dx-r": {"USDC": BOOK_AMOUNTS[2]},
            "cb-down": {"BTC": BOOK_AMOUNTS[1]},
        },
    )
    env = clean_environ(
        **desk.env(
            RECONCILIATION_LOG_LEVEL="DEBUG",
            RECONCILIATION_WEBHOOK_URL=webhook,
            RECONCILIATION_WEBHOOK_SECRET=WEBHOOK_SECRET,
            RECONCILIATION_RETRY_COUNT="1",
        )
    )
    run = subprocess.run(
        [str(recon_script()), "reconcile", "--all", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 4, run.stderr[-3000:]
    cycle = json.loads(run.stdout)
    statuses = {r["account_id"]: r["status"] for r in cycle["reports"]}
    assert statuses == {
        "cb-r": "ERROR",
        "dx-r": "CRITICAL",
        "cb-down": "ERROR",
        "kr-r": "ERROR",
        "bn-r": "SUCCESS",
    }
    assert Receiver.bodies, "the confirmed breaks should have alerted"
    assert "DEBUG" in run.stderr  # the run really logged at DEBUG

    error_messages = [r["error"]["message"] for r in cycle["reports"] if r["error"]]
    places = {
        "log": run.stderr,
        "alerts": b"\n".join(Receiver.bodies).decode(),
        "errors": "\n".join(error_messages),
    }
    for where, text in places.items():
        for amount in (*VENUE_AMOUNTS, *BOOK_AMOUNTS):
            assert amount not in text, f"balance {amount} in {where}"
        for secret in secrets():
            assert secret not in text, f"a secret in {where}"
