"""The roles the cycle needs from the outside world, as protocols the adapters satisfy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Protocol

from domain.policy import PriceTable
from domain.report import Report


class BookSource(Protocol):
    """What the desk's book says it holds, per account (book asset codes)."""

    def balances(self, account_id: str) -> dict[str, Decimal]:
        """Raises :class:`domain.report.SourceError` when the book cannot be read."""
        ...


class PriceSource(Protocol):
    """USD marks for the assets in play in one cycle."""

    def prices_for(self, assets: Iterable[str]) -> PriceTable: ...


class AuditWriter(Protocol):
    """The append-only audit store."""

    def record_cycle(self, reports: Sequence[Report]) -> int:
        """Write every report of one cycle in one transaction; returns rows newly written."""
        ...

    def record_recoveries(self, reports: Sequence[Report]) -> int:
        """Record the reports' confirmations in their rows' recovery columns."""
        ...

    def cycle_reports(self, cycle_id: str) -> list[Report]:
        """The reports recorded for ``cycle_id``."""
        ...
