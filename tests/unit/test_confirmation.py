"""Confirmation (the seed's recovery): a WARNING-or-worse break is looked at again."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from domain.confirmation import (
    confirm,
    confirmed_cycle_status,
    confirmed_status,
    needs_confirmation,
    with_recovery,
)
from domain.policy import Policy, PriceTable
from domain.reconcile import reconcile_account
from domain.report import Cycle, ErrorKind, FetchError, RecoveryStatus, Report, Status
from domain.serialization import report_from_json, report_to_json

AT = datetime(2026, 11, 24, tzinfo=UTC)
LATER = datetime(2026, 11, 24, 0, 0, 5, tzinfo=UTC)
PRICES = PriceTable({"BTC": Decimal(60000)})


def report(venue: dict[str, Decimal] | FetchError, local: str = "1.25") -> Report:
    return reconcile_account(
        reconciliation_id="r",
        cycle_id="c",
        account_id="a",
        exchange="coinbase",
        reconciled_at=AT,
        local={"BTC": Decimal(local)},
        venue=venue,
        policy=Policy(),
        prices=PRICES,
    )


def test_only_warning_or_worse_findings_need_a_second_look() -> None:
    """INFO findings and clean reports are not re-fetched; a failed fetch is not a finding."""
    assert needs_confirmation(report({"BTC": Decimal("1.27")}))  # WARNING
    assert not needs_confirmation(report({"BTC": Decimal("1.25")}))  # clean
    assert not needs_confirmation(report({"BTC": Decimal("1.2500001")}))  # INFO
    assert not needs_confirmation(report(FetchError(ErrorKind.TIMEOUT, "t")))


def test_a_break_gone_on_re_fetch_is_a_timing_break() -> None:
    """SUCCESS: the second look finds no WARNING-or-worse finding; the facts stay."""
    first = report({"BTC": Decimal("1.27")})
    recovery = confirm(first, report({"BTC": Decimal("1.25")}), LATER)
    assert recovery.status is RecoveryStatus.SUCCESS
    assert recovery.found_status is Status.SUCCESS
    confirmed = with_recovery(first, recovery)
    assert confirmed.status is Status.WARNING  # the first fetch's status is kept
    assert confirmed_status(confirmed) is Status.SUCCESS


def test_a_break_that_stays_is_confirmed() -> None:
    """FAILED: the break is still there on the second look."""
    first = report({"BTC": Decimal("1.27")})
    recovery = confirm(first, report({"BTC": Decimal("1.27")}), LATER)
    assert recovery.status is RecoveryStatus.FAILED
    assert confirmed_status(with_recovery(first, recovery)) is Status.WARNING


def test_a_failed_re_fetch_confirms_the_break_with_its_error() -> None:
    """A re-fetch that fails counts as confirmed, the error in the details."""
    first = report({"BTC": Decimal("0")}, local="1")  # CRITICAL missing
    error = FetchError(ErrorKind.UNAVAILABLE, "coinbase: HTTP 503")
    recovery = confirm(first, report(error, local="1"), LATER)
    assert recovery.status is RecoveryStatus.FAILED
    assert recovery.error == error
    assert recovery.found_status is None


def test_cycle_exit_status_counts_only_confirmed_breaks() -> None:
    """A cycle whose only break was a timing break is SUCCESS for exit codes and alerts."""
    first = report({"BTC": Decimal("1.27")})
    timing = with_recovery(first, confirm(first, report({"BTC": Decimal("1.25")}), LATER))
    assert confirmed_cycle_status(Cycle("c", AT, LATER, (timing,))) is Status.SUCCESS
    assert Cycle("c", AT, LATER, (timing,)).status is Status.WARNING


def test_recovery_round_trips_in_the_report_json() -> None:
    """The report JSON carries the verdict under "recovery" and reads back equal."""
    first = report({"BTC": Decimal("1.27")})
    confirmed = with_recovery(first, confirm(first, report({"BTC": Decimal("1.28")}), LATER))
    data = report_to_json(confirmed)
    assert data["recovery"]["status"] == "FAILED"
    assert data["recovery"]["found_status"] == "WARNING"
    assert data["recovery"]["discrepancies"][0]["exchange"] == "1.28"
    assert report_from_json(data) == confirmed
    assert report_to_json(first)["recovery"] is None
