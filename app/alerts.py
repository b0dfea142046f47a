"""Alert events (DESIGN §5, Alerts): which confirmed breaks opened and which resolved.

A *break* is a confirmed finding at or above the configured least severity:

* a discrepancy of a report whose confirmation stayed (recovery ``FAILED``) and that the
  re-fetch still found (same asset, WARNING or worse; every one of them when the re-fetch
  itself failed), with severity ≥ ``min_severity``. A report whose recovery is ``SUCCESS`` (a
  timing break) or that was never confirmed has no break;
* a report whose fetch failed after its retries (``error`` set): one break of type
  ``fetch_failed``, asset ``"*"``, severity ``ERROR``, when ERROR ≥ ``min_severity``.

Dedup needs no state of its own: the audit trail is the state. The open set of the account's
current report is compared with the open set of its previous report (the latest earlier one in
the audit history): ``opened = current − previous``, ``resolved = previous − current``, keyed
by (account, asset, type). So a break alerts once when it appears, not while it stays open,
and once more when it clears.

An event never carries an amount (balances, diffs, ``value_usd``) nor a secret: its fields are
exactly :data:`EVENT_FIELDS`.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Protocol

from domain.discrepancy import Severity
from domain.report import Cycle, RecoveryStatus, Report, Status

log = logging.getLogger(__name__)

#: The type of the break of an account whose fetch failed after its retries.
FETCH_FAILED: Final = "fetch_failed"
#: The asset of a ``fetch_failed`` break (the whole account).
ALL_ASSETS: Final = "*"
#: Every key of an event's JSON, in order; nothing else is ever sent.
EVENT_FIELDS: Final = (
    "event",
    "account_id",
    "exchange",
    "asset",
    "type",
    "severity",
    "reconciliation_id",
    "cycle_id",
    "at",
)


class EventKind(enum.StrEnum):
    """Whether a break appeared or cleared."""

    OPENED = "opened"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class OpenBreak:
    """One confirmed break of one report: its dedup key and its severity."""

    account_id: str
    asset: str
    type: str
    severity: Status

    @property
    def key(self) -> tuple[str, str, str]:
        """The dedup key: (account, asset, type)."""
        return (self.account_id, self.asset, self.type)


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One alert: a break opened or resolved (no amount, no secret)."""

    event: EventKind
    account_id: str
    exchange: str
    asset: str
    type: str
    severity: Status
    reconciliation_id: str
    cycle_id: str
    at: datetime

    def to_json(self) -> dict[str, str]:
        """The webhook body's fields (DESIGN §5), every value a string."""
        at = self.at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return {
            "event": self.event.value,
            "account_id": self.account_id,
            "exchange": self.exchange,
            "asset": self.asset,
            "type": self.type,
            "severity": self.severity.value,
            "reconciliation_id": self.reconciliation_id,
            "cycle_id": self.cycle_id,
            "at": at,
        }


def _at_least(severity: Status, min_severity: Status) -> bool:
    # Only WARNING or worse is ever a break, whatever the configured floor.
    return severity.rank >= max(min_severity.rank, Status.WARNING.rank)


def open_breaks(
    report: Report | None, min_severity: Status
) -> dict[tuple[str, str, str], OpenBreak]:
    """The confirmed breaks of ``report`` at or above ``min_severity``, by dedup key."""
    if report is None:
        return {}
    found: list[OpenBreak] = []
    if report.error is not None:
        if _at_least(Status.ERROR, min_severity):
            found.append(OpenBreak(report.account_id, ALL_ASSETS, FETCH_FAILED, Status.ERROR))
    else:
        recovery = report.recovery
        if recovery is not None and recovery.status is RecoveryStatus.FAILED:
            # The re-fetch failed: every break counts as confirmed. Otherwise only those the
            # re-fetch still found (a break that cleared on the second look was a timing break).
            still = (
                None
                if recovery.error is not None
                else {d.asset for d in recovery.discrepancies if d.severity >= Severity.WARNING}
            )
            for d in report.discrepancies:
                severity = Status.of_severity(d.severity)
                if (still is None or d.asset in still) and _at_least(severity, min_severity):
                    found.append(OpenBreak(report.account_id, d.asset, d.type.value, severity))
    return {b.key: b for b in found}


def alert_events(
    report: Report, previous: Report | None, min_severity: Status, at: datetime
) -> list[AlertEvent]:
    """The events of ``report`` given the account's ``previous`` report (None: nothing open).

    Resolved events first, then opened ones, each sorted by (asset, type). Resolved events
    carry the severity the break had and the ids of ``report`` (the report that cleared it).
    """
    if previous is not None and previous.account_id != report.account_id:
        raise ValueError("previous must be a report of the same account")
    now = open_breaks(report, min_severity)
    before = open_breaks(previous, min_severity)

    def event(kind: EventKind, brk: OpenBreak) -> AlertEvent:
        return AlertEvent(
            event=kind,
            account_id=report.account_id,
            exchange=report.exchange,
            asset=brk.asset,
            type=brk.type,
            severity=brk.severity,
            reconciliation_id=report.reconciliation_id,
            cycle_id=report.cycle_id,
            at=at,
        )

    resolved = [event(EventKind.RESOLVED, before[k]) for k in sorted(before.keys() - now.keys())]
    opened = [event(EventKind.OPENED, now[k]) for k in sorted(now.keys() - before.keys())]
    return resolved + opened


def previous_report(history: Sequence[Report], current: Report) -> Report | None:
    """The account's report before ``current`` in ``history`` (newest first, as
    ``AuditRepository.history(account_id=…)`` returns it), skipping ``current`` itself."""
    for report in history:
        if report.account_id != current.account_id:
            continue
        if report.reconciliation_id == current.reconciliation_id:
            continue
        if report.reconciled_at <= current.reconciled_at:
            return report
    return None


class AlertSink(Protocol):
    """Where events go (the webhook); must not raise."""

    def send(self, events: Sequence[Mapping[str, str]]) -> object: ...


HistoryOf = Callable[[str], Sequence[Report]]


def publish_cycle_alerts(
    cycle: Cycle,
    *,
    history_of: HistoryOf,
    sink: AlertSink,
    min_severity: Status,
    at: datetime,
) -> list[AlertEvent]:
    """Compute and send the alerts of a confirmed, recorded ``cycle``; returns the events.

    ``history_of(account_id)`` gives the account's recent reports, newest first (the current
    one may be among them). Never raises: an alert failure must not fail the cycle.
    """
    events: list[AlertEvent] = []
    try:
        for report in cycle.reports:
            previous = previous_report(history_of(report.account_id), report)
            events.extend(alert_events(report, previous, min_severity, at))
        if events:
            sink.send([e.to_json() for e in events])
    except Exception as exc:  # noqa: BLE001  (alerts never fail a cycle whose rows are written)
        # The exception's type only: its message could quote a row.
        log.warning("alerts failed: cycle=%s error=%s", cycle.cycle_id, type(exc).__name__)
    return events


__all__ = [
    "ALL_ASSETS",
    "EVENT_FIELDS",
    "FETCH_FAILED",
    "AlertEvent",
    "AlertSink",
    "EventKind",
    "OpenBreak",
    "alert_events",
    "open_breaks",
    "previous_report",
    "publish_cycle_alerts",
]
