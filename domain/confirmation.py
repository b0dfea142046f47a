"""Confirmation (the seed's recovery): a WARNING-or-worse break is checked again.

An account whose report holds a finding at WARNING or worse is fetched again — both sides —
after a short delay. If the second look finds no such finding, the break was a timing break:
``SUCCESS``. If one remains, or the second look itself fails, the break is confirmed:
``FAILED``. The first report's facts and status are kept; only the confirmed view counts for
alerts and exit codes (DESIGN §5, Confirmation).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from domain.discrepancy import Discrepancy, Severity
from domain.report import Cycle, Recovery, RecoveryStatus, Report, Status


def breaks(report: Report) -> tuple[Discrepancy, ...]:
    """The findings that need confirming: WARNING or worse."""
    return tuple(d for d in report.discrepancies if d.severity >= Severity.WARNING)


def needs_confirmation(report: Report) -> bool:
    """True for a report with a WARNING-or-worse finding; a failed fetch is not a finding."""
    return report.error is None and bool(breaks(report))


def confirm(first: Report, second: Report, checked_at: datetime) -> Recovery:
    """The verdict of ``second`` (the re-fetch) on ``first``'s breaks."""
    if second.error is not None:
        return Recovery(RecoveryStatus.FAILED, checked_at, None, (), second.error)
    remaining = breaks(second)
    status = RecoveryStatus.FAILED if remaining else RecoveryStatus.SUCCESS
    return Recovery(status, checked_at, second.status, second.discrepancies)


def with_recovery(report: Report, recovery: Recovery) -> Report:
    """``report`` carrying ``recovery`` (its own facts unchanged)."""
    return replace(report, recovery=recovery)


def confirmed_status(report: Report) -> Status:
    """The status that alerts and exit codes act on: a timing break counts as SUCCESS."""
    recovery = report.recovery
    if recovery is not None and recovery.status is RecoveryStatus.SUCCESS:
        return Status.SUCCESS
    return report.status


def confirmed_cycle_status(cycle: Cycle) -> Status:
    """The worst confirmed status of ``cycle``'s reports (what the CLI's exit code uses)."""
    return Status.worst(confirmed_status(r) for r in cycle.reports)
