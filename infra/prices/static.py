"""The static price table of the accounts file's ``[prices]`` section."""

from __future__ import annotations

from collections.abc import Iterable

from domain.policy import PriceTable


class StaticPrices:
    """Serves the configured marks; assets without a mark stay unpriced (DESIGN §4)."""

    def __init__(self, table: PriceTable) -> None:
        self._table = table

    def prices_for(self, assets: Iterable[str]) -> PriceTable:
        """The whole configured table (a static source needs no per-cycle fetch)."""
        del assets
        return self._table
