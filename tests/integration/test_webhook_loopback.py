"""Webhook delivery to a real HTTP server on 127.0.0.1: a signed POST arrives and verifies."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from app.alerts import alert_events, publish_cycle_alerts
from domain.discrepancy import Discrepancy, DiscrepancyType, Severity
from domain.report import Cycle, Recovery, RecoveryStatus, Report, Status
from infra.alerts import SIGNATURE_HEADER, WebhookAlerts
from infra.db import AuditRepository, create_audit_engine, ensure_schema

SECRET = "loopback-secret-7f3a"
AT = datetime(2026, 11, 24, 0, 1, tzinfo=UTC)


class _Server(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        #: Statuses to answer with, in order; 200 once exhausted.
        self.statuses: list[int] = []


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append((self.path, dict(self.headers.items()), body))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def confirmed_report() -> Report:
    d = Discrepancy(
        DiscrepancyType.MISMATCH,
        "BTC",
        Decimal("1.23456789"),
        Decimal("1.31313131"),
        Decimal("0.07856342"),
        Decimal("4713.8052"),
        Severity.ERROR,
    )
    return Report(
        reconciliation_id="r1",
        cycle_id="c1",
        account_id="cb-main",
        exchange="coinbase",
        reconciled_at=AT,
        local_balances={"BTC": d.local},
        exchange_balances={"BTC": d.exchange},
        discrepancies=(d,),
        recovery=Recovery(RecoveryStatus.FAILED, AT, Status.ERROR, (d,)),
    )


def test_signed_post_reaches_a_real_server(server: _Server) -> None:
    """A confirmed break's event arrives as one POST whose signature verifies, with no amount."""
    events = [e.to_json() for e in alert_events(confirmed_report(), None, Status.WARNING, AT)]
    url = f"http://127.0.0.1:{server.server_port}/alerts"
    with httpx.Client() as http:
        alerts = WebhookAlerts(http, url, secret=SECRET, timeout=5.0, sleep=lambda _: None)
        assert alerts.send(events) == 1
    ((path, headers, body),) = server.received
    assert path == "/alerts"
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
    payload = json.loads(body)
    assert payload["event"] == "opened"
    assert (payload["account_id"], payload["asset"], payload["severity"]) == (
        "cb-main",
        "BTC",
        "ERROR",
    )
    for amount in ("1.23456789", "1.31313131", "0.07856342", "4713.8052", SECRET):
        assert amount not in body.decode()


def test_real_server_errors_are_retried_then_delivered(server: _Server) -> None:
    """A 503 then a 200 from a real server: the second attempt delivers the same signed bytes."""
    server.statuses = [503]
    url = f"http://127.0.0.1:{server.server_port}/alerts"
    sleeps: list[float] = []
    event = alert_events(confirmed_report(), None, Status.WARNING, AT)[0].to_json()
    with httpx.Client() as http:
        alerts = WebhookAlerts(http, url, secret=SECRET, timeout=5.0, sleep=sleeps.append)
        assert alerts.send([event]) == 1
    assert len(server.received) == 2
    assert server.received[0][2] == server.received[1][2]
    assert sleeps == [0.5]


def test_unreachable_webhook_gives_up_without_raising() -> None:
    """A refused connection (closed loopback port) is retried, then given up quietly."""
    srv = _Server()
    port = srv.server_port
    srv.server_close()
    event = alert_events(confirmed_report(), None, Status.WARNING, AT)[0].to_json()
    sleeps: list[float] = []
    with httpx.Client() as http:
        alerts = WebhookAlerts(
            http, f"http://127.0.0.1:{port}/x", secret=None, timeout=2.0, sleep=sleeps.append
        )
        assert alerts.send([event]) == 0
    assert sleeps == [0.5, 1.0, 2.0]


def _cycle_report(n: int, *, broken: bool, timing: bool = False) -> Report:
    """Report ``n`` of cb-main, a confirmed ERROR break on BTC when ``broken``."""
    at = AT + timedelta(minutes=n)
    local = Decimal("1.23456789")
    venue = Decimal("1.31313131") if broken else local
    d = Discrepancy(
        DiscrepancyType.MISMATCH, "BTC", local, venue, venue - local, None, Severity.ERROR
    )
    status = RecoveryStatus.SUCCESS if timing else RecoveryStatus.FAILED
    return Report(
        reconciliation_id=f"r{n}",
        cycle_id=f"c{n}",
        account_id="cb-main",
        exchange="coinbase",
        reconciled_at=at,
        local_balances={"BTC": local},
        exchange_balances={"BTC": venue},
        discrepancies=(d,) if broken else (),
        recovery=Recovery(status, at, Status.ERROR, () if timing else (d,)) if broken else None,
    )


def test_audit_trail_drives_dedup_end_to_end(server: _Server, sqlite_url: str) -> None:
    """Cycles recorded in a real audit store, alerts computed from its history as the cycle
    observer does: opened once, silent while open and through a timing break's first look,
    resolved once when it clears."""
    engine = create_audit_engine(sqlite_url)
    ensure_schema(engine)
    repo = AuditRepository(engine)
    url = f"http://127.0.0.1:{server.server_port}/alerts"
    plan = [
        _cycle_report(0, broken=False),
        _cycle_report(1, broken=True),
        _cycle_report(2, broken=True),
        _cycle_report(3, broken=False),
        _cycle_report(4, broken=True, timing=True),
    ]
    try:
        with httpx.Client() as http:
            sink = WebhookAlerts(http, url, secret=SECRET, timeout=5.0, sleep=lambda _: None)
            for report in plan:
                first = replace(report, recovery=None)
                repo.record_cycle([first])
                if report.recovery is not None:
                    repo.record_recoveries([report])
                publish_cycle_alerts(
                    Cycle(report.cycle_id, report.reconciled_at, report.reconciled_at, (report,)),
                    history_of=lambda account: repo.history(account_id=account, limit=3),
                    sink=sink,
                    min_severity=Status.WARNING,
                    at=report.reconciled_at,
                )
    finally:
        engine.dispose()
    got = [json.loads(body) for _, _, body in server.received]
    assert [(e["event"], e["cycle_id"]) for e in got] == [("opened", "c1"), ("resolved", "c3")]
    for _, headers, body in server.received:
        assert hmac.compare_digest(
            headers[SIGNATURE_HEADER],
            "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
        )
