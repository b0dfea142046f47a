"""The comparison and severity table of DESIGN §4, exactly.

For each asset in the union of both sides (absent = 0), ``diff = exchange − local``;
``value = |diff| × USD price`` (unknown without a price);
``rel = |diff| / max(|local|, |exchange|)``.
First match wins:

=====================================  ==========================  ===========================
case                                   type                        severity
=====================================  ==========================  ===========================
diff = 0                               (no discrepancy)
|diff| ≤ tolerance(asset)              precision                   INFO
value known and value ≥ critical_usd   missing / mismatch          CRITICAL
value known and value < threshold_usd  missing / mismatch          INFO
one side is 0                          missing                     CRITICAL if priced, else ERROR
rel < 1 %                              mismatch                    INFO
1 % ≤ rel ≤ 5 %                        mismatch                    WARNING
rel > 5 %                              mismatch                    ERROR
=====================================  ==========================  ===========================
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from domain.amounts import ZERO, multiply, subtract
from domain.policy import Policy, PriceTable


class Severity(enum.IntEnum):
    """How bad a finding is; ordered so that ``max`` picks the worst."""

    INFO = 1
    WARNING = 2
    ERROR = 3
    CRITICAL = 4


class DiscrepancyType(enum.StrEnum):
    """What kind of difference a discrepancy is."""

    PRECISION = "precision"
    MISSING = "missing"
    MISMATCH = "mismatch"


class Side(enum.StrEnum):
    """A side of the comparison: the book (``local``) or the venue (``exchange``)."""

    LOCAL = "local"
    EXCHANGE = "exchange"


@dataclass(frozen=True, slots=True)
class Discrepancy:
    """One asset whose book and venue amounts differ."""

    type: DiscrepancyType
    asset: str
    local: Decimal
    exchange: Decimal
    diff: Decimal
    value_usd: Decimal | None
    severity: Severity
    missing_from: Side | None = None


def _missing_from(local: Decimal, exchange: Decimal) -> Side | None:
    if local == 0:
        return Side.LOCAL
    if exchange == 0:
        return Side.EXCHANGE
    return None


def classify(
    asset: str, local: Decimal, exchange: Decimal, policy: Policy, prices: PriceTable
) -> Discrepancy | None:
    """Classify one asset's two amounts by the §4 table; None when they are equal."""
    diff = subtract(exchange, local)
    if diff == 0:
        return None
    magnitude = abs(diff)
    price = prices.usd(asset)
    value = multiply(magnitude, price) if price is not None else None
    missing_from = _missing_from(local, exchange)
    kind = DiscrepancyType.MISSING if missing_from is not None else DiscrepancyType.MISMATCH

    def found(type_: DiscrepancyType, severity: Severity) -> Discrepancy:
        side = missing_from if type_ is DiscrepancyType.MISSING else None
        return Discrepancy(type_, asset, local, exchange, diff, value, severity, side)

    if magnitude <= policy.tolerance(asset):
        return found(DiscrepancyType.PRECISION, Severity.INFO)
    if value is not None and value >= policy.critical_usd:
        return found(kind, Severity.CRITICAL)
    if value is not None and value < policy.threshold_usd:
        return found(kind, Severity.INFO)
    if missing_from is not None:
        return found(kind, Severity.CRITICAL if value is not None else Severity.ERROR)
    # rel = magnitude / largest, compared without division so no rounding can move a boundary.
    largest = max(abs(local), abs(exchange))
    if multiply(magnitude, Decimal(100)) < largest:
        return found(kind, Severity.INFO)
    if multiply(magnitude, Decimal(20)) <= largest:
        return found(kind, Severity.WARNING)
    return found(kind, Severity.ERROR)


def compare(
    local: Mapping[str, Decimal],
    exchange: Mapping[str, Decimal],
    policy: Policy,
    prices: PriceTable,
) -> tuple[Discrepancy, ...]:
    """Every discrepancy between the two sides, one per asset, sorted by asset code."""
    found = (
        classify(asset, local.get(asset, ZERO), exchange.get(asset, ZERO), policy, prices)
        for asset in sorted(set(local) | set(exchange))
    )
    return tuple(d for d in found if d is not None)
