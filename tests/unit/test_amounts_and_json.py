"""Amount parsing limits, the canonical string form, and the §5 JSON shape."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from domain.amounts import InvalidAmount, format_amount, parse_amount
from domain.policy import Policy, PriceTable
from domain.reconcile import reconcile_account
from domain.report import Cycle, Status
from domain.serialization import SerializationError, cycle_to_json, report_from_json, report_to_json


@pytest.mark.parametrize(
    "bad",
    ["NaN", "nan", "Infinity", "-Infinity", "1e400", "abc", "", "1,5", "0x10", 1.5, True, None],
)
def test_parse_amount_refuses_bad_input(bad: object) -> None:
    """NaN, Infinity, absurd magnitudes, non-numeric text, floats and booleans are refused."""
    with pytest.raises(InvalidAmount):
        parse_amount(bad)


def test_parse_amount_error_never_repeats_the_value() -> None:
    """The message of a refused amount does not contain the amount itself."""
    with pytest.raises(InvalidAmount) as info:
        parse_amount("123456789.123456789x")
    assert "123456789" not in str(info.value)


def test_parse_amount_keeps_full_precision() -> None:
    """Sixteen-decimal Coinbase strings and 18-decimal token amounts parse exactly."""
    assert parse_amount("0.5000000000000000") == D("0.5")
    assert parse_amount("0.000000000000000001") == D("1e-18")
    assert parse_amount(12) == D(12)


def test_unsigned_fields_refuse_negative() -> None:
    """allow_negative=False refuses a negative amount (Coinbase hold, Binance free …)."""
    with pytest.raises(InvalidAmount):
        parse_amount("-0.1", allow_negative=False)


@pytest.mark.parametrize(
    ("amount", "text"),
    [(D("1200.00"), "1200"), (D("0E-8"), "0"), (D("1E+3"), "1000"), (D("-0.0200"), "-0.02")],
)
def test_format_amount_is_canonical(amount: D, text: str) -> None:
    """Fixed-point, no exponent, no trailing zeros."""
    assert format_amount(amount) == text


def test_report_json_matches_the_design_example() -> None:
    """The §5 example: BTC 1.25 vs 1.27 at 60 000 → WARNING mismatch, value_usd "1200"."""
    at = datetime(2026, 11, 24, 0, 0, 1, tzinfo=UTC)
    report = reconcile_account(
        reconciliation_id="r-1",
        cycle_id="c-1",
        account_id="cb-main",
        exchange="coinbase",
        reconciled_at=at,
        local={"BTC": D("1.25")},
        venue={"BTC": D("1.27")},
        policy=Policy(),
        prices=PriceTable({"BTC": D(60000)}),
    )
    assert report_to_json(report) == {
        "reconciliation_id": "r-1",
        "cycle_id": "c-1",
        "account_id": "cb-main",
        "exchange": "coinbase",
        "reconciled_at": "2026-11-24T00:00:01Z",
        "status": "WARNING",
        "error": None,
        "local_balances": {"BTC": "1.25"},
        "exchange_balances": {"BTC": "1.27"},
        "discrepancies": [
            {
                "type": "mismatch",
                "asset": "BTC",
                "local": "1.25",
                "exchange": "1.27",
                "diff": "0.02",
                "value_usd": "1200",
                "severity": "WARNING",
            }
        ],
        "recovery": None,
    }
    cycle = Cycle("c-1", at, at, (report,))
    assert cycle_to_json(cycle)["status"] == "WARNING"
    assert Cycle("c-2", at, at, ()).status is Status.SUCCESS


def test_report_from_json_refuses_a_status_that_disagrees() -> None:
    """A stored report whose status contradicts its discrepancies is rejected, not trusted."""
    at = datetime(2026, 11, 24, tzinfo=UTC)
    report = reconcile_account(
        reconciliation_id="r",
        cycle_id="c",
        account_id="a",
        exchange="dydx",
        reconciled_at=at,
        local={},
        venue={},
        policy=Policy(),
        prices=PriceTable(),
    )
    data = report_to_json(report)
    data["status"] = "CRITICAL"
    with pytest.raises(SerializationError):
        report_from_json(data)
