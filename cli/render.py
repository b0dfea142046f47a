"""Human-readable output of cycles and reports: rich tables, and CSV for history."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from domain.amounts import format_amount
from domain.report import Cycle, RecoveryStatus, Report, Status

STATUS_STYLE = {
    Status.SUCCESS: "green",
    Status.WARNING: "yellow",
    Status.ERROR: "red",
    Status.CRITICAL: "bold white on red",
}


def _status(status: Status) -> Text:
    return Text(status.value, style=STATUS_STYLE[status])


def reports_table(reports: Sequence[Report], title: str) -> Table:
    """One row per report: account, venue, status, findings, error."""
    table = Table(title=title, title_justify="left")
    table.add_column("account", no_wrap=True)
    table.add_column("exchange", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("findings", justify="right")
    table.add_column("detail")
    table.add_column("reconciled at (UTC)", no_wrap=True)
    for report in reports:
        if report.error is not None:
            detail = f"{report.error.kind.value}: {report.error.message}"
        else:
            worst = sorted(report.discrepancies, key=lambda d: -d.severity)
            detail = ", ".join(f"{d.asset} {d.type.value} {d.severity.name}" for d in worst[:3])
        if report.recovery is not None:
            verdict = (
                "gone on re-check (timing break)"
                if report.recovery.status is RecoveryStatus.SUCCESS
                else "confirmed on re-check"
            )
            detail = f"{detail}; {verdict}"
        table.add_row(
            report.account_id,
            report.exchange,
            _status(report.status),
            str(len(report.discrepancies)),
            detail,
            report.reconciled_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


def discrepancies_table(reports: Sequence[Report]) -> Table | None:
    """Every discrepancy of ``reports`` with its amounts; None when there are none."""
    rows = [(r, d) for r in reports for d in r.discrepancies]
    if not rows:
        return None
    table = Table(title="discrepancies", title_justify="left")
    for name in ("account", "asset", "type", "severity"):
        table.add_column(name, no_wrap=True)
    for name in ("book", "venue", "diff", "value USD"):
        table.add_column(name, justify="right", no_wrap=True)
    for report, d in rows:
        kind = d.type.value if d.missing_from is None else f"{d.type.value} ({d.missing_from})"
        severity = Status.of_severity(d.severity)
        table.add_row(
            report.account_id,
            d.asset,
            kind,
            _status(severity) if severity is not Status.SUCCESS else Text("INFO"),
            format_amount(d.local),
            format_amount(d.exchange),
            format_amount(d.diff),
            "unpriced" if d.value_usd is None else format_amount(d.value_usd),
        )
    return table


#: Width used when standard output is not a terminal (a pipe, a CI log): wide enough that
#: amounts with 18 decimals are never wrapped or cut.
PIPE_WIDTH = 160


def output_console() -> Console:
    """A console for standard output: the terminal's width, or :data:`PIPE_WIDTH` in a pipe."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=PIPE_WIDTH)
    return console


def print_cycle(console: Console, cycle: Cycle) -> None:
    """The cycle as a summary table, then its discrepancies."""
    console.print(reports_table(cycle.reports, f"cycle {cycle.cycle_id}"))
    details = discrepancies_table(cycle.reports)
    if details is not None:
        console.print(details)
    console.print(Text.assemble("cycle status: ", _status(cycle.status)))


HISTORY_COLUMNS = (
    "reconciled_at",
    "reconciliation_id",
    "cycle_id",
    "account_id",
    "exchange",
    "status",
    "discrepancy_count",
    "error_kind",
)


def history_csv(reports: Sequence[Report]) -> str:
    """History as CSV (one row per report, no amounts beyond the count of findings)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for r in reports:
        writer.writerow(
            [
                r.reconciled_at.isoformat().replace("+00:00", "Z"),
                r.reconciliation_id,
                r.cycle_id,
                r.account_id,
                r.exchange,
                r.status.value,
                len(r.discrepancies),
                "" if r.error is None else r.error.kind.value,
            ]
        )
    return buffer.getvalue()
