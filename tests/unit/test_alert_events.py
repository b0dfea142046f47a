"""Alert events (DESIGN §5, Alerts): opened/resolved per confirmed break, no amounts."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.alerts import (
    EVENT_FIELDS,
    AlertEvent,
    EventKind,
    alert_events,
    open_breaks,
    previous_report,
    publish_cycle_alerts,
)
from domain.discrepancy import Discrepancy, DiscrepancyType, Severity, Side
from domain.report import (
    Cycle,
    ErrorKind,
    FetchError,
    Recovery,
    RecoveryStatus,
    Report,
    Status,
)

T0 = datetime(2026, 11, 24, tzinfo=UTC)
AT = datetime(2026, 11, 24, 0, 1, tzinfo=UTC)
#: Amounts planted in every report: none of them may appear in any event.
LOCAL_BTC = Decimal("1.23456789")
VENUE_BTC = Decimal("1.31313131")
LOCAL_ETH = Decimal("47.0707")
VENUE_ETH = Decimal("0")
PLANTED = ("1.23456789", "1.31313131", "47.0707", "0.07856342", "4713.8052", "987654.32")


def btc(severity: Severity = Severity.WARNING) -> Discrepancy:
    return Discrepancy(
        DiscrepancyType.MISMATCH,
        "BTC",
        LOCAL_BTC,
        VENUE_BTC,
        VENUE_BTC - LOCAL_BTC,
        Decimal("4713.8052"),
        severity,
    )


def eth(severity: Severity = Severity.CRITICAL) -> Discrepancy:
    return Discrepancy(
        DiscrepancyType.MISSING,
        "ETH",
        LOCAL_ETH,
        VENUE_ETH,
        -LOCAL_ETH,
        Decimal("987654.32"),
        severity,
        Side.EXCHANGE,
    )


def make(
    n: int,
    discrepancies: Sequence[Discrepancy] = (),
    *,
    recovery: RecoveryStatus | None = RecoveryStatus.FAILED,
    still: Sequence[Discrepancy] | None = None,
    error: FetchError | None = None,
    account: str = "cb-main",
) -> Report:
    """Report number ``n`` of ``account``; confirmed (FAILED) by default when it has findings."""
    at = T0 + timedelta(minutes=n)
    rec = None
    if recovery is not None and discrepancies:
        found = tuple(discrepancies if still is None else still)
        rec = Recovery(recovery, at, Status.WARNING, found)
    return Report(
        reconciliation_id=f"r{n}",
        cycle_id=f"c{n}",
        account_id=account,
        exchange="coinbase",
        reconciled_at=at,
        local_balances={} if error else {"BTC": LOCAL_BTC, "ETH": LOCAL_ETH},
        exchange_balances={} if error else {"BTC": VENUE_BTC},
        discrepancies=tuple(discrepancies),
        error=error,
        recovery=rec,
    )


def kinds(events: Sequence[AlertEvent]) -> list[tuple[str, str, str]]:
    return [(e.event.value, e.asset, e.type) for e in events]


def run(reports: Sequence[Report], min_severity: Status = Status.WARNING) -> list[list[AlertEvent]]:
    """The events of each report of a sequence, each given the one before it."""
    out = []
    previous = None
    for report in reports:
        out.append(alert_events(report, previous, min_severity, AT))
        previous = report
    return out


FAILED_FETCH = FetchError(ErrorKind.TIMEOUT, "coinbase timed out")


def test_break_opens_once_stays_quiet_and_resolves_when_it_clears() -> None:
    """One opened when a confirmed break appears, nothing while it stays, one resolved after."""
    steps = run([make(0), make(1, [btc()]), make(2, [btc()]), make(3, [btc()]), make(4)])
    assert [kinds(s) for s in steps] == [
        [],
        [("opened", "BTC", "mismatch")],
        [],
        [],
        [("resolved", "BTC", "mismatch")],
    ]
    resolved = steps[4][0]
    assert resolved.severity is Status.WARNING  # the severity the break had
    assert (resolved.reconciliation_id, resolved.cycle_id) == ("r4", "c4")  # the clearing report


def test_first_report_of_an_account_opens_everything_confirmed() -> None:
    """previous=None means nothing was open: every confirmed break opens."""
    events = alert_events(make(0, [btc(), eth()]), None, Status.WARNING, AT)
    assert kinds(events) == [("opened", "BTC", "mismatch"), ("opened", "ETH", "missing")]
    assert [e.severity for e in events] == [Status.WARNING, Status.CRITICAL]


def test_timing_break_never_opens() -> None:
    """A report whose recovery is SUCCESS (the break was gone on re-fetch) has no open break."""
    timing = make(1, [btc(), eth()], recovery=RecoveryStatus.SUCCESS, still=[])
    assert open_breaks(timing, Status.WARNING) == {}
    steps = run([make(0), timing, make(2)])
    assert steps == [[], [], []]


def test_unconfirmed_report_has_no_open_break() -> None:
    """A finding never confirmed (no recovery recorded) does not alert."""
    assert open_breaks(make(1, [btc()], recovery=None), Status.WARNING) == {}


def test_timing_break_while_open_resolves_it() -> None:
    """An open break whose next report is a timing break is reported resolved."""
    steps = run([make(0, [btc()]), make(1, [btc()], recovery=RecoveryStatus.SUCCESS, still=[])])
    assert kinds(steps[1]) == [("resolved", "BTC", "mismatch")]


def test_only_breaks_the_re_fetch_still_found_are_confirmed() -> None:
    """FAILED confirms the assets the re-fetch still found; one that cleared was a timing break."""
    report = make(0, [btc(), eth()], still=[eth()])
    assert kinds(alert_events(report, None, Status.WARNING, AT)) == [("opened", "ETH", "missing")]


def test_failed_re_fetch_confirms_every_break() -> None:
    """A re-fetch that failed counts as confirmation of every break of the report."""
    base = make(0, [btc(), eth()])
    assert base.recovery is not None
    rec = Recovery(RecoveryStatus.FAILED, base.recovery.checked_at, None, (), FAILED_FETCH)
    report = Report(
        reconciliation_id="r0",
        cycle_id="c0",
        account_id="cb-main",
        exchange="coinbase",
        reconciled_at=T0,
        local_balances=base.local_balances,
        exchange_balances=base.exchange_balances,
        discrepancies=base.discrepancies,
        recovery=rec,
    )
    assert len(alert_events(report, None, Status.WARNING, AT)) == 2


def test_fetch_failed_opens_and_resolves() -> None:
    """A failed fetch is one fetch_failed break (asset "*", ERROR), resolved once reads work."""
    steps = run([make(0), make(1, error=FAILED_FETCH), make(2, error=FAILED_FETCH), make(3)])
    assert [kinds(s) for s in steps] == [
        [],
        [("opened", "*", "fetch_failed")],
        [],
        [("resolved", "*", "fetch_failed")],
    ]
    assert steps[1][0].severity is Status.ERROR


def test_fetch_failure_replaces_an_open_break() -> None:
    """Asset breaks resolve and fetch_failed opens when the account can no longer be read."""
    steps = run([make(0, [btc()]), make(1, error=FAILED_FETCH)])
    assert kinds(steps[1]) == [("resolved", "BTC", "mismatch"), ("opened", "*", "fetch_failed")]


@pytest.mark.parametrize(
    ("min_severity", "expected"),
    [
        (Status.SUCCESS, ["BTC", "ETH", "*"]),  # below WARNING acts as WARNING
        (Status.WARNING, ["BTC", "ETH", "*"]),
        (Status.ERROR, ["ETH", "*"]),
        (Status.CRITICAL, ["ETH"]),
    ],
)
def test_min_severity_filters_breaks(min_severity: Status, expected: list[str]) -> None:
    """Only breaks at or above the least alerting severity open (fetch_failed is ERROR)."""
    breaks = alert_events(make(0, [btc(), eth()], account="a"), None, min_severity, AT)
    failed = alert_events(make(0, error=FAILED_FETCH, account="b"), None, min_severity, AT)
    assert [e.asset for e in (*breaks, *failed)] == expected


def test_info_findings_never_alert() -> None:
    """An INFO finding is not a break, even confirmed."""
    assert open_breaks(make(0, [btc(Severity.INFO)]), Status.SUCCESS) == {}


def test_break_below_min_severity_does_not_resolve_either() -> None:
    """A break filtered out by the floor neither opens nor resolves."""
    steps = run([make(0, [btc()]), make(1)], min_severity=Status.ERROR)
    assert steps == [[], []]


def test_severity_change_of_an_open_break_is_not_a_new_event() -> None:
    """Dedup is per (account, asset, type): a severity change while open sends nothing."""
    steps = run([make(0, [btc(Severity.WARNING)]), make(1, [btc(Severity.ERROR)])])
    assert steps[1] == []


def test_events_carry_exactly_the_design_fields_and_no_amount() -> None:
    """Every event's JSON has exactly the DESIGN §5 keys and none of the planted amounts."""
    reports = [make(0, [btc(), eth()]), make(1, [eth()]), make(2), make(3, error=FAILED_FETCH)]
    events = [e for step in run(reports) for e in step]
    assert {e.event for e in events} == {EventKind.OPENED, EventKind.RESOLVED}
    for event in events:
        body = event.to_json()
        assert tuple(body) == EVENT_FIELDS
        assert all(isinstance(v, str) for v in body.values())
        text = json.dumps(body)
        for amount in PLANTED:
            assert amount not in text
    assert events[0].to_json()["at"] == "2026-11-24T00:01:00Z"


def test_previous_must_be_the_same_account() -> None:
    """Comparing with another account's report is a programming error."""
    with pytest.raises(ValueError, match="same account"):
        alert_events(make(1), make(0, account="other"), Status.WARNING, AT)


def test_previous_report_skips_the_current_one_in_history() -> None:
    """The previous report is the newest earlier one, not the current report itself."""
    current = make(2)
    history = [current, make(1), make(0)]
    assert previous_report(history, current) == history[1]
    assert previous_report([current], current) is None
    assert previous_report([], current) is None


class _Sink:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[Mapping[str, str]] = []
        self.fail = fail

    def send(self, events: Sequence[Mapping[str, str]]) -> None:
        if self.fail:
            raise RuntimeError("sink down 1.23456789")
        self.sent.extend(events)


def test_publish_cycle_alerts_sends_each_accounts_events() -> None:
    """The cycle helper finds each account's previous report in its history and sends."""
    old_a, new_a = make(0, [btc()], account="a"), make(1, account="a")
    new_b = make(1, [eth()], account="b")
    histories = {"a": [new_a, old_a], "b": [new_b]}
    sink = _Sink()
    cycle = Cycle("c1", T0, T0, (new_a, new_b))
    events = publish_cycle_alerts(
        cycle, history_of=histories.__getitem__, sink=sink, min_severity=Status.WARNING, at=AT
    )
    assert [(e["event"], e["account_id"], e["asset"]) for e in sink.sent] == [
        ("resolved", "a", "BTC"),
        ("opened", "b", "ETH"),
    ]
    assert len(events) == 2


def test_publish_cycle_alerts_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    """A failing sink or history is logged (without its message) and swallowed."""
    cycle = Cycle("c1", T0, T0, (make(1, [eth()]),))
    caplog.set_level(logging.WARNING)
    publish_cycle_alerts(
        cycle, history_of=lambda _: [], sink=_Sink(fail=True), min_severity=Status.WARNING, at=AT
    )

    def broken(_: str) -> list[Report]:
        raise OSError("db gone")

    publish_cycle_alerts(cycle, history_of=broken, sink=_Sink(), min_severity=Status.WARNING, at=AT)
    assert len(caplog.records) == 2
    assert "1.23456789" not in caplog.text
