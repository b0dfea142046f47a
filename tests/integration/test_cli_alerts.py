"""Alerts through ``recon reconcile``: a confirmed break opens once, resolves once, signed."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from tests.support import Desk, desk_fixture, dydx_venue  # noqa: F401  (the ``desk`` fixture)

SECRET = "alert-secret-for-tests-9f3b"


class Receiver(http.server.BaseHTTPRequestHandler):
    """Collects every POSTed alert (body and signature header)."""

    received: ClassVar[list[tuple[dict[str, Any], str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        signature = self.headers.get("X-Recon-Signature", "")
        Receiver.received.append((json.loads(body), signature, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def webhook() -> Iterator[str]:
    Receiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/recon"
    finally:
        server.shutdown()
        server.server_close()


VENUE = dydx_venue(
    "dx", subaccount=0, assets=[{"symbol": "USDC", "side": "LONG", "size": "10200.37"}]
)


def test_confirmed_break_alerts_once_then_resolves(desk: Desk, webhook: str) -> None:
    """Opened on the first confirmed break, nothing while it stays, resolved when it clears."""
    desk.start(VENUE, book={"dx": {"USDC": "10000.11"}})
    env = {"RECONCILIATION_WEBHOOK_URL": webhook, "RECONCILIATION_WEBHOOK_SECRET": SECRET}

    for _ in range(2):
        result = desk.recon("reconcile", "--all", **env)
        assert result.exit_code == 0, result.stderr  # WARNING exits 0
    opened = [event for event, _, _ in Receiver.received]
    assert [(e["event"], e["account_id"], e["asset"], e["severity"]) for e in opened] == [
        ("opened", "dx", "USDC", "WARNING")
    ]

    (desk.book_path).write_text(
        json.dumps({"as_of": "2026-11-24T00:00:00Z", "accounts": {"dx": {"USDC": "10200.37"}}}),
        encoding="utf-8",
    )
    result = desk.recon("reconcile", "--all", **env)
    assert result.exit_code == 0, result.stderr
    events = [event["event"] for event, _, _ in Receiver.received]
    assert events == ["opened", "resolved"]

    for event, signature, body in Receiver.received:
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(signature, f"sha256={expected}")
        assert set(event) == {
            "event",
            "account_id",
            "exchange",
            "asset",
            "type",
            "severity",
            "reconciliation_id",
            "cycle_id",
            "at",
        }
        for amount in ("10200.37", "10000.11", "200.26"):
            assert amount not in body.decode()
        assert SECRET not in body.decode()
