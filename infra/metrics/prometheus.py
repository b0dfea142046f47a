"""The seed's monitoring figures as Prometheus metrics (prometheus-client).

- ``recon_reconciliations_total{exchange,status}`` (counter): success/failure rate.
- ``recon_cycle_duration_seconds`` (histogram): average reconciliation (cycle) time.
- ``recon_discrepancies_total{exchange,type,severity}`` (counter): discrepancy frequency.
- ``recon_fetch_failures_total{exchange,kind}`` (counter): reads that failed after retries.
- ``recon_cycles_total{status}`` (counter): cycles by outcome.
- ``recon_last_cycle_timestamp_seconds`` (gauge): when the last cycle finished (staleness).
- ``recon_recoveries_total{exchange,outcome}`` (counter): confirming re-fetches by verdict
  (SUCCESS: the break was gone, a timing break; FAILED: confirmed) — the recovery success rate.

Labels carry venue names, statuses and kinds only: never an account's amounts.
"""

from __future__ import annotations

import logging
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from domain.report import Cycle

log = logging.getLogger(__name__)

#: Cycle wall-time buckets (seconds): a desk's cycle is ~0.2–2 s, a fund's up to minutes.
DURATION_BUCKETS: Final = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class CycleMetrics:
    """Counts every written cycle into one registry; call :meth:`observe` per cycle."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciliations = Counter(
            "recon_reconciliations",
            "Account reconciliations written, by venue and report status.",
            ["exchange", "status"],
            registry=self.registry,
        )
        self.cycle_duration = Histogram(
            "recon_cycle_duration_seconds",
            "Wall time of a cycle, from its start to its audit rows written.",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.discrepancies = Counter(
            "recon_discrepancies",
            "Discrepancies found, by venue, type and severity.",
            ["exchange", "type", "severity"],
            registry=self.registry,
        )
        self.fetch_failures = Counter(
            "recon_fetch_failures",
            "Accounts whose venue or book could not be read after retries, by error kind.",
            ["exchange", "kind"],
            registry=self.registry,
        )
        self.cycles = Counter(
            "recon_cycles", "Cycles written, by cycle status.", ["status"], registry=self.registry
        )
        self.recoveries = Counter(
            "recon_recoveries",
            "Confirming re-fetches of WARNING-or-worse breaks, by verdict.",
            ["exchange", "outcome"],
            registry=self.registry,
        )
        self.last_cycle = Gauge(
            "recon_last_cycle_timestamp_seconds",
            "Unix time at which the last cycle finished.",
            registry=self.registry,
        )

    def observe(self, cycle: Cycle) -> None:
        """Count one written cycle."""
        self.cycles.labels(status=cycle.status.value).inc()
        self.cycle_duration.observe((cycle.finished_at - cycle.started_at).total_seconds())
        self.last_cycle.set(cycle.finished_at.timestamp())
        for report in cycle.reports:
            self.reconciliations.labels(exchange=report.exchange, status=report.status.value).inc()
            if report.error is not None:
                self.fetch_failures.labels(
                    exchange=report.exchange, kind=report.error.kind.value
                ).inc()
            if report.recovery is not None:
                self.recoveries.labels(
                    exchange=report.exchange, outcome=report.recovery.status.value
                ).inc()
            for d in report.discrepancies:
                self.discrepancies.labels(
                    exchange=report.exchange, type=d.type.value, severity=d.severity.name
                ).inc()

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside the container
        """Expose ``/metrics`` on ``port`` (a daemon thread)."""
        start_http_server(port, addr=addr, registry=self.registry)
        log.info("metrics served on port %d", port)
