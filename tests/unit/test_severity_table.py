"""Pins every row of the DESIGN §4 comparison and severity table, and each boundary."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from domain.discrepancy import DiscrepancyType, Severity, Side, classify, compare
from domain.policy import Policy, PriceTable

POLICY = Policy(threshold_usd=D(100), critical_usd=D(10000), tolerances={"USD": D("0.01")})
PRICES = PriceTable({"BTC": D(60000), "ETH": D(3000)})


def test_equal_amounts_are_no_discrepancy() -> None:
    """diff = 0 → no discrepancy at all."""
    assert classify("BTC", D("1.25"), D("1.250"), POLICY, PRICES) is None


def test_within_default_tolerance_is_precision_info() -> None:
    """|diff| ≤ the default tolerance 0.00000001 → precision / INFO."""
    d = classify("BTC", D("1"), D("1.00000001"), POLICY, PRICES)
    assert d is not None
    assert (d.type, d.severity, d.missing_from) == (DiscrepancyType.PRECISION, Severity.INFO, None)


def test_just_over_tolerance_is_not_precision() -> None:
    """|diff| one unit beyond the band leaves the precision row."""
    d = classify("XYZ", D("1"), D("1.000000011"), POLICY, PRICES)
    assert d is not None
    assert d.type is DiscrepancyType.MISMATCH


def test_per_asset_tolerance_applies() -> None:
    """USD's band is 0.01 in this policy: a cent is precision, a cent and a bit is not."""
    cent = classify("USD", D("100"), D("100.01"), POLICY, PRICES)
    more = classify("USD", D("100"), D("100.011"), POLICY, PRICES)
    assert cent is not None
    assert cent.type is DiscrepancyType.PRECISION
    assert more is not None
    assert more.type is DiscrepancyType.MISMATCH


def test_precision_wins_even_for_a_missing_side() -> None:
    """First match wins: a dust amount on one side only is precision, not missing."""
    d = classify("BTC", D(0), D("0.00000001"), POLICY, PRICES)
    assert d is not None
    assert d.type is DiscrepancyType.PRECISION
    assert d.missing_from is None


def test_value_at_critical_is_critical_mismatch() -> None:
    """value = critical_usd exactly → CRITICAL (≥ is inclusive)."""
    # diff 1 ETH x 3000 would be 3000; use BTC: 1/6 BTC is not exact, so price a made-up asset.
    prices = PriceTable({"AAA": D(10000)})
    d = classify("AAA", D("5"), D("6"), POLICY, prices)
    assert d is not None
    assert d.value_usd == D(10000)
    assert (d.type, d.severity) == (DiscrepancyType.MISMATCH, Severity.CRITICAL)


def test_value_just_below_critical_is_not_critical() -> None:
    """value one cent under critical_usd falls through to the relative rows."""
    prices = PriceTable({"AAA": D("9999.99")})
    d = classify("AAA", D("500"), D("501"), POLICY, prices)
    assert d is not None
    assert d.severity is Severity.INFO  # rel = 1/501 < 1 %


def test_value_critical_missing_keeps_missing_type() -> None:
    """A missing asset worth ≥ critical is type missing, CRITICAL, with missing_from."""
    d = classify("BTC", D("1"), D("0"), POLICY, PRICES)
    assert d is not None
    assert (d.type, d.severity, d.missing_from) == (
        DiscrepancyType.MISSING,
        Severity.CRITICAL,
        Side.EXCHANGE,
    )


def test_value_below_threshold_is_info_even_if_relative_is_large() -> None:
    """value < threshold_usd → INFO, before the relative rows (a 50 % break of 50 USD)."""
    d = classify("USDC", D("100"), D("50"), POLICY, PRICES)
    assert d is not None
    assert d.value_usd == D(50)
    assert (d.type, d.severity) == (DiscrepancyType.MISMATCH, Severity.INFO)


def test_value_below_threshold_missing_is_info_missing() -> None:
    """A priced missing asset worth under the threshold is missing / INFO."""
    d = classify("USDC", D("0"), D("99.99"), POLICY, PRICES)
    assert d is not None
    assert (d.type, d.severity, d.missing_from) == (
        DiscrepancyType.MISSING,
        Severity.INFO,
        Side.LOCAL,
    )


def test_value_at_threshold_is_not_below_threshold() -> None:
    """value = threshold exactly is not "< threshold": the relative rows decide."""
    d = classify("USDC", D("1000"), D("1100"), POLICY, PRICES)
    assert d is not None
    assert d.value_usd == D(100)
    assert d.severity is Severity.ERROR  # rel = 100/1100 > 5 %


def test_priced_missing_between_threshold_and_critical_is_critical() -> None:
    """one side 0, priced, threshold ≤ value < critical → missing / CRITICAL."""
    d = classify("ETH", D("0"), D("1"), POLICY, PRICES)
    assert d is not None
    assert (d.type, d.severity, d.missing_from) == (
        DiscrepancyType.MISSING,
        Severity.CRITICAL,
        Side.LOCAL,
    )


def test_unpriced_missing_is_error() -> None:
    """one side 0 and no price → missing / ERROR, value unknown."""
    d = classify("NOPRICE", D("3"), D("0"), POLICY, PRICES)
    assert d is not None
    assert (d.type, d.severity, d.value_usd, d.missing_from) == (
        DiscrepancyType.MISSING,
        Severity.ERROR,
        None,
        Side.EXCHANGE,
    )


@pytest.mark.parametrize(
    ("local", "exchange", "severity"),
    [
        ("1000", "1009.99", Severity.INFO),  # rel = 9.99/1009.99 < 1 %
        ("990", "1000", Severity.WARNING),  # rel = 10/1000 = 1 % exactly → WARNING
        ("1000", "990.0000001", Severity.INFO),  # rel just under 1 %
        ("950", "1000", Severity.WARNING),  # rel = 50/1000 = 5 % exactly → WARNING
        ("949.99", "1000", Severity.ERROR),  # rel just over 5 %
        ("1000", "2000", Severity.ERROR),
    ],
)
def test_relative_rows_and_their_boundaries(local: str, exchange: str, severity: Severity) -> None:
    """Unpriced mismatches: rel < 1 % INFO, 1 % ≤ rel ≤ 5 % WARNING, rel > 5 % ERROR."""
    d = classify("NOPRICE", D(local), D(exchange), POLICY, PRICES)
    assert d is not None
    assert (d.type, d.severity, d.missing_from) == (DiscrepancyType.MISMATCH, severity, None)


def test_relative_uses_the_larger_magnitude_of_either_side() -> None:
    """rel divides by max(|local|, |exchange|), negatives included (short perps)."""
    d = classify("NOPRICE", D("-1000"), D("-990"), POLICY, PRICES)
    assert d is not None
    assert d.diff == D(10)
    assert d.severity is Severity.WARNING


def test_priced_mismatch_in_the_middle_band_uses_relative_rows() -> None:
    """The seed example: BTC 1.25 vs 1.27 at 60 000 → value 1 200, rel 1.57 % → WARNING."""
    d = classify("BTC", D("1.25"), D("1.27"), POLICY, PRICES)
    assert d is not None
    assert (d.diff, d.value_usd, d.severity) == (D("0.02"), D("1200.00"), Severity.WARNING)


def test_perp_is_valued_at_its_base_price() -> None:
    """ETH/USD:USDC is valued at ETH's price; a signed short size compares exactly."""
    d = classify("ETH/USD:USDC", D("-1.5"), D("-2.5"), POLICY, PRICES)
    assert d is not None
    assert d.diff == D("-1.0")
    assert d.value_usd == D("3000.0")


def test_stablecoins_are_priced_at_one_by_default() -> None:
    """USD, USDC and USDT are 1 unless the table says otherwise."""
    assert PriceTable().usd("USDT") == D(1)
    assert PriceTable({"USDT": D("0.999")}).usd("USDT") == D("0.999")
    assert PriceTable().usd("BTC") is None


def test_compare_covers_the_union_of_assets_sorted() -> None:
    """An asset on one side only is compared against zero; results are sorted by asset."""
    found = compare({"BTC": D(1), "ETH": D(2)}, {"ETH": D(2), "ABC": D(5)}, POLICY, PRICES)
    assert [d.asset for d in found] == ["ABC", "BTC"]
    assert found[0].missing_from is Side.LOCAL
    assert found[1].missing_from is Side.EXCHANGE


def test_zero_balances_on_both_sides_are_no_discrepancy() -> None:
    """An explicit zero and an absent asset are the same thing."""
    assert compare({"BTC": D(0)}, {}, POLICY, PRICES) == ()


def test_policy_refuses_critical_below_threshold() -> None:
    """critical_usd must be at least threshold_usd."""
    with pytest.raises(ValueError):
        Policy(threshold_usd=D(100), critical_usd=D(50))
