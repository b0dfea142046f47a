"""Reconcile one account: the book side and the venue side in, a :class:`Report` out."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from domain.discrepancy import compare
from domain.policy import Policy, PriceTable
from domain.report import FetchError, Report

Side = Mapping[str, Decimal] | FetchError


def reconcile_account(
    *,
    reconciliation_id: str,
    cycle_id: str,
    account_id: str,
    exchange: str,
    reconciled_at: datetime,
    local: Side,
    venue: Side,
    policy: Policy,
    prices: PriceTable,
) -> Report:
    """Compare the book (``local``) with the venue for one account.

    A side that could not be read makes the report ERROR with that side's error: it is never
    read as a zero balance, and such a report holds no discrepancies.
    """
    error = venue if isinstance(venue, FetchError) else None
    if isinstance(local, FetchError):
        error = local
    local_balances = local if not isinstance(local, FetchError) else {}
    if error is not None:
        return Report(
            reconciliation_id=reconciliation_id,
            cycle_id=cycle_id,
            account_id=account_id,
            exchange=exchange,
            reconciled_at=reconciled_at,
            local_balances=local_balances,
            exchange_balances={},
            error=error,
        )
    assert not isinstance(venue, FetchError)
    assert not isinstance(local, FetchError)
    return Report(
        reconciliation_id=reconciliation_id,
        cycle_id=cycle_id,
        account_id=account_id,
        exchange=exchange,
        reconciled_at=reconciled_at,
        local_balances=local,
        exchange_balances=venue,
        discrepancies=compare(local, venue, policy, prices),
    )
