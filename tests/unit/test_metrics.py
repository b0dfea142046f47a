"""The seed's figures as Prometheus metrics: counted per written cycle, served, no amounts."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

from domain.confirmation import confirm, with_recovery
from domain.policy import Policy, PriceTable
from domain.reconcile import reconcile_account
from domain.report import Cycle, ErrorKind, FetchError
from infra.metrics.prometheus import CycleMetrics

AT = datetime(2026, 11, 24, tzinfo=UTC)
PRICES = PriceTable({"BTC": Decimal(60000)})


def _cycle() -> Cycle:
    ok = reconcile_account(
        reconciliation_id="r1",
        cycle_id="c",
        account_id="a1",
        exchange="coinbase",
        reconciled_at=AT,
        local={"BTC": Decimal("1.25")},
        venue={"BTC": Decimal("1.27")},
        policy=Policy(),
        prices=PRICES,
    )
    failed = reconcile_account(
        reconciliation_id="r2",
        cycle_id="c",
        account_id="a2",
        exchange="dydx",
        reconciled_at=AT,
        local={},
        venue=FetchError(ErrorKind.TIMEOUT, "dydx: timed out"),
        policy=Policy(),
        prices=PRICES,
    )
    return Cycle("c", AT, AT + timedelta(seconds=1.5), (ok, failed))


def test_a_cycle_is_counted_by_status_venue_and_discrepancy() -> None:
    """Reports by venue and status, discrepancies by type/severity, failures by kind, duration."""
    metrics = CycleMetrics()
    metrics.observe(_cycle())
    value = metrics.registry.get_sample_value
    assert value("recon_reconciliations_total", {"exchange": "coinbase", "status": "WARNING"}) == 1
    assert value("recon_reconciliations_total", {"exchange": "dydx", "status": "ERROR"}) == 1
    assert (
        value(
            "recon_discrepancies_total",
            {"exchange": "coinbase", "type": "mismatch", "severity": "WARNING"},
        )
        == 1
    )
    assert value("recon_fetch_failures_total", {"exchange": "dydx", "kind": "timeout"}) == 1
    assert value("recon_cycles_total", {"status": "ERROR"}) == 1
    assert value("recon_cycle_duration_seconds_sum") == 1.5
    assert value("recon_cycle_duration_seconds_count") == 1


def test_confirmations_are_counted_by_verdict() -> None:
    """The recovery success rate: confirming re-fetches counted by SUCCESS / FAILED."""
    cycle = _cycle()
    warning = cycle.reports[0]
    recheck = reconcile_account(
        reconciliation_id="r1",
        cycle_id="c",
        account_id="a1",
        exchange="coinbase",
        reconciled_at=AT,
        local={"BTC": Decimal("1.25")},
        venue={"BTC": Decimal("1.25")},
        policy=Policy(),
        prices=PRICES,
    )
    confirmed = with_recovery(warning, confirm(warning, recheck, AT))
    metrics = CycleMetrics()
    metrics.observe(Cycle("c", AT, AT, (confirmed,)))
    assert (
        metrics.registry.get_sample_value(
            "recon_recoveries_total", {"exchange": "coinbase", "outcome": "SUCCESS"}
        )
        == 1
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_are_served_and_hold_no_amount() -> None:
    """GET /metrics lists recon's metrics; no balance or diff of the cycle appears in it."""
    metrics = CycleMetrics()
    metrics.observe(_cycle())
    port = _free_port()
    metrics.serve(port, addr="127.0.0.1")
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert "recon_reconciliations_total" in body
    assert "recon_cycle_duration_seconds_bucket" in body
    for amount in ("1.25", "1.27", "0.02", "1200"):
        assert amount not in body
