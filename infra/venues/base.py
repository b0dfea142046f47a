"""The port every venue client implements."""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol


class VenueClient(Protocol):
    """Reads one venue account's total balance per asset code, as the venue names it.

    Implementations raise only :class:`infra.venues.errors.VenueError` subclasses, make one
    attempt per call (retrying is :mod:`infra.venues.retry`'s job) and never return a zero
    balance for a failure.
    """

    def fetch_balances(self) -> dict[str, Decimal]:
        """Total per venue asset code (entries of one code summed)."""
        ...
