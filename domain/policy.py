"""The reconciliation policy (tolerances and USD thresholds) and the USD price table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Final

DEFAULT_TOLERANCE: Final = Decimal("0.00000001")
DEFAULT_THRESHOLD_USD: Final = Decimal(100)
#: The critical level defaults to this multiple of the threshold (DESIGN §2).
CRITICAL_MULTIPLE: Final = Decimal(100)
#: Quoted in USD by definition unless the price table says otherwise.
USD_PEGGED: Final = frozenset({"USD", "USDC", "USDT"})


def _frozen(mapping: Mapping[str, Decimal]) -> Mapping[str, Decimal]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class Policy:
    """How differences are judged: per-asset tolerance bands and the USD thresholds."""

    threshold_usd: Decimal = DEFAULT_THRESHOLD_USD
    critical_usd: Decimal = DEFAULT_THRESHOLD_USD * CRITICAL_MULTIPLE
    default_tolerance: Decimal = DEFAULT_TOLERANCE
    tolerances: Mapping[str, Decimal] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tolerances", _frozen(self.tolerances))
        if self.threshold_usd < 0 or self.critical_usd < 0 or self.default_tolerance < 0:
            raise ValueError("policy thresholds and tolerances must not be negative")
        if any(t < 0 for t in self.tolerances.values()):
            raise ValueError("policy tolerances must not be negative")
        if self.critical_usd < self.threshold_usd:
            raise ValueError("critical_usd must be at least threshold_usd")

    def tolerance(self, asset: str) -> Decimal:
        """The absolute precision band of ``asset``."""
        return self.tolerances.get(asset, self.default_tolerance)


def base_asset(asset: str) -> str:
    """The asset whose USD price values ``asset``: a perp ``BASE/QUOTE:SETTLE`` → ``BASE``."""
    if "/" in asset:
        return asset.split("/", 1)[0]
    return asset


@dataclass(frozen=True, slots=True)
class PriceTable:
    """USD marks per asset code; USD, USDC and USDT are 1 unless set explicitly."""

    marks: Mapping[str, Decimal] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "marks", _frozen(self.marks))
        if any(not m.is_finite() or m < 0 for m in self.marks.values()):
            raise ValueError("prices must be finite and not negative")

    def usd(self, asset: str) -> Decimal | None:
        """The USD price of one unit of ``asset`` (perps at their base's price), or None."""
        base = base_asset(asset)
        if base in self.marks:
            return self.marks[base]
        if base in USD_PEGGED:
            return Decimal(1)
        return None
