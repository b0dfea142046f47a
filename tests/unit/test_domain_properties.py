"""Property tests of the pure core: symmetry, uniqueness, exact round-trips, no floats."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.amounts import (
    MAX_FRACTION_DIGITS,
    MAX_MAGNITUDE,
    InvalidAmount,
    format_amount,
    parse_amount,
)
from domain.discrepancy import Side, compare
from domain.policy import Policy, PriceTable
from domain.reconcile import reconcile_account
from domain.report import Cycle, ErrorKind, FetchError
from domain.serialization import (
    balances_from_json,
    balances_to_json,
    balances_to_json_text,
    cycle_from_json,
    cycle_to_json,
    report_from_json,
    report_to_json,
)

ASSETS = st.sampled_from(["BTC", "ETH", "USDC", "USD", "SOL", "DOGE", "ETH/USD:USDC", "NOPRICE"])
AMOUNTS = st.decimals(
    min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=8, allow_nan=False
).map(lambda d: d.normalize() if d != 0 else Decimal(0))
BALANCES = st.dictionaries(ASSETS, AMOUNTS, max_size=8)
POLICY = Policy(threshold_usd=Decimal(100), critical_usd=Decimal(10000))
PRICES = PriceTable({"BTC": Decimal(60000), "ETH": Decimal("3000.5"), "SOL": Decimal("150")})
AT = datetime(2026, 11, 24, tzinfo=UTC)


def _report(local: dict[str, Decimal], venue: dict[str, Decimal] | FetchError):
    return reconcile_account(
        reconciliation_id="r1",
        cycle_id="c1",
        account_id="acct",
        exchange="coinbase",
        reconciled_at=AT,
        local=local,
        venue=venue,
        policy=POLICY,
        prices=PRICES,
    )


@given(BALANCES, BALANCES)
def test_swapping_sides_swaps_missing_from_and_negates_diff(
    local: dict[str, Decimal], exchange: dict[str, Decimal]
) -> None:
    """compare(a, b) and compare(b, a) agree on assets, types and severities, mirror the rest."""
    forward = compare(local, exchange, POLICY, PRICES)
    backward = compare(exchange, local, POLICY, PRICES)
    assert [d.asset for d in forward] == [d.asset for d in backward]
    mirror = {Side.LOCAL: Side.EXCHANGE, Side.EXCHANGE: Side.LOCAL, None: None}
    for f, b in zip(forward, backward, strict=True):
        assert f.diff == -b.diff
        assert f.type == b.type
        assert f.severity == b.severity
        assert f.value_usd == b.value_usd
        assert f.missing_from == mirror[b.missing_from]
        assert (f.local, f.exchange) == (b.exchange, b.local)


@given(BALANCES, BALANCES)
def test_a_report_never_holds_an_asset_twice(
    local: dict[str, Decimal], exchange: dict[str, Decimal]
) -> None:
    """Each asset of the union appears at most once among the discrepancies."""
    report = _report(local, exchange)
    assets = [d.asset for d in report.discrepancies]
    assert len(assets) == len(set(assets))
    assert set(assets) <= set(local) | set(exchange)


@given(BALANCES, BALANCES)
def test_no_float_anywhere_in_results(
    local: dict[str, Decimal], exchange: dict[str, Decimal]
) -> None:
    """Every number in a report and its JSON is a Decimal or a string, never a float."""
    report = _report(local, exchange)
    for d in report.discrepancies:
        for number in (d.local, d.exchange, d.diff, d.value_usd):
            assert number is None or isinstance(number, Decimal)

    def walk(node: object) -> None:
        assert not isinstance(node, float)
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(report_to_json(report))


@given(BALANCES, BALANCES)
def test_report_json_round_trips_exactly(
    local: dict[str, Decimal], exchange: dict[str, Decimal]
) -> None:
    """report → JSON text → report gives back equal amounts, statuses and discrepancies."""
    report = _report(local, exchange)
    text = json.dumps(report_to_json(report))
    back = report_from_json(json.loads(text))
    assert back == report
    cycle = Cycle("c1", AT, AT, (report,))
    assert cycle_from_json(json.loads(json.dumps(cycle_to_json(cycle)))) == cycle


@given(AMOUNTS)
def test_format_then_parse_is_identity(amount: Decimal) -> None:
    """The canonical string of an amount parses back to the same value, with no exponent."""
    text = format_amount(amount)
    assert "E" not in text.upper()
    assert parse_amount(text) == amount


def test_a_failed_fetch_is_never_a_zero_balance() -> None:
    """A venue failure gives an ERROR report with the error, no balances, no discrepancies."""
    report = _report({"BTC": Decimal(1)}, FetchError(ErrorKind.TIMEOUT, "coinbase: timed out"))
    assert report.status.value == "ERROR"
    assert report.error is not None
    assert report.error.kind is ErrorKind.TIMEOUT
    assert dict(report.exchange_balances) == {}
    assert report.discrepancies == ()
    assert dict(report.local_balances) == {"BTC": Decimal(1)}


#: Any decimal a venue or book could give (trailing zeros, exponents, negative zero), keyed by
#: any asset code (quotes, backslashes, non-ASCII included): the audit text must not care.
def _in_amount_range(amount: Decimal) -> bool:
    exponent = amount.as_tuple().exponent
    return (
        isinstance(exponent, int)
        and -exponent <= MAX_FRACTION_DIGITS
        and amount.copy_abs() < MAX_MAGNITUDE
    )


RAW_AMOUNTS: st.SearchStrategy[Decimal] = st.decimals(
    allow_nan=False, allow_infinity=False, places=None
).filter(_in_amount_range)
RAW_BALANCES = st.dictionaries(st.text(min_size=1, max_size=12), RAW_AMOUNTS, max_size=12)


@given(RAW_BALANCES)
def test_audit_balance_text_is_the_json_of_the_balances(balances: dict[str, Decimal]) -> None:
    """The audit store's fast balance text is exactly the compact JSON of the §5 balances."""
    expected = json.dumps(balances_to_json(balances), separators=(",", ":"), ensure_ascii=False)
    assert balances_to_json_text(balances) == expected
    assert balances_from_json(json.loads(balances_to_json_text(balances))) == balances


@given(RAW_AMOUNTS)
def test_canonical_form_of_any_amount(amount: Decimal) -> None:
    """Every amount, however written (1E+3, 1.500, -0), has one fixed-point form: no exponent,
    no trailing fractional zero, no sign on zero, and the same value."""
    text = format_amount(amount)
    assert "E" not in text.upper()
    assert not ("." in text and text.endswith(("0", ".")))
    assert text != "-0"
    assert Decimal(text) == amount


@pytest.mark.parametrize("value", ["NaN", "sNaN", "Infinity", "-Infinity"])
def test_format_refuses_what_is_not_a_finite_amount(value: str) -> None:
    with pytest.raises(InvalidAmount):
        format_amount(Decimal(value))
