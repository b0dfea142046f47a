"""Venue asset codes → the book's asset codes."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from domain.amounts import add


def to_book_codes(
    balances: Mapping[str, Decimal], asset_map: Mapping[str, str]
) -> dict[str, Decimal]:
    """Rename venue codes by ``asset_map`` (codes absent from it are kept as they are).

    Amounts that land on one book code are summed, so a report speaks in book codes and
    never holds an asset twice.
    """
    result: dict[str, Decimal] = {}
    for code, amount in balances.items():
        book_code = asset_map.get(code, code)
        result[book_code] = add(result[book_code], amount) if book_code in result else amount
    return result
