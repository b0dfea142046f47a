"""The chord's header: accounts grouped per venue endpoint and cut into bounded batches."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.cycle import AccountPlan
from workers.canvas import venue_groups


class NoClient:
    def fetch_balances(self) -> dict[str, Decimal]:
        raise AssertionError("not called")


def plan(
    account_id: str, exchange: str, base_url: str = "http://v", pressure: float = 0.0
) -> AccountPlan:
    return AccountPlan(
        account_id, exchange, NoClient(), base_url=base_url, budget_pressure=pressure
    )


def test_one_batch_per_venue_endpoint() -> None:
    """Accounts of one exchange and base URL share a batch; another endpoint gets its own."""
    plans = [plan("b", "dydx"), plan("a", "coinbase"), plan("c", "dydx", "http://w")]
    assert venue_groups(plans, 50) == [["a"], ["b"], ["c"]]


def test_batches_are_bounded_and_cover_every_account_once() -> None:
    """A venue with more accounts than the batch size is split; nothing lost or repeated."""
    plans = [plan(f"acct-{i:03d}", "coinbase") for i in range(7)]
    batches = venue_groups(plans, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert sorted(a for b in batches for a in b) == [p.account_id for p in plans]


def test_batch_size_must_be_positive() -> None:
    """A zero batch size is a programming error."""
    with pytest.raises(ValueError):
        venue_groups([plan("a", "dydx")], 0)


def test_the_endpoints_under_most_budget_pressure_come_first() -> None:
    """The endpoint whose cycle needs most of its rate budget is started first (its window
    opens earliest); equal pressures keep the exchange and base URL order."""
    plans = [
        plan("a", "coinbase", pressure=1 / 30),
        plan("k", "kraken", pressure=1 / 15),
        plan("b1", "binance", "http://b", pressure=100 / 300),
        plan("b2", "binance", "http://b", pressure=100 / 300),
        plan("d1", "dydx", "http://d", pressure=1.0),
        plan("d2", "dydx", "http://d", pressure=1.0),
        plan("d3", "dydx", "http://d", pressure=1.0),
        plan("z", "binance", "http://c", pressure=100 / 300),
    ]
    assert venue_groups(plans, 2) == [["d1", "d2"], ["d3"], ["b1", "b2"], ["z"], ["k"], ["a"]]
