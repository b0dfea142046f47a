"""Rate budgets (infra.venues.pacing): the window and bucket models on a fake clock, and what
the composition root gives each venue."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.bootstrap import (
    VENUE_PACING,
    binance_weight_limit,
    budget_pressures,
    check_shared_budgets,
    pacer_for,
)
from infra.config import ConfigError, Roster, load_roster, load_settings
from infra.config.roster import AccountConfig
from infra.config.roster import RateLimit as AccountRateLimit
from infra.venues.pacing import (
    LimitModel,
    LocalRateBudget,
    RateLimit,
    ip_scope,
    key_scope,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sent_at(budget: LocalRateBudget, clock: FakeClock, scope: str, limit: RateLimit) -> float:
    return clock.now + budget.reserve(scope, limit)


def test_a_window_lets_the_burst_go_then_waits_out_the_span() -> None:
    """3 per second: three go at once, the fourth after the span (plus its margin), and
    another scope is not slowed by the busy one."""
    clock = FakeClock()
    budget = LocalRateBudget(clock)
    limit = RateLimit(LimitModel.WINDOW, capacity=3, per_second=3.0)
    waits = [budget.reserve("a", limit) for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(1.0 + limit.margin)
    assert budget.reserve("b", limit) == 0.0
    clock.now += 5.0
    assert budget.reserve("a", limit) == 0.0


@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.7), min_size=1, max_size=80),
    capacity=st.integers(min_value=1, max_value=6),
    span=st.floats(min_value=0.1, max_value=3.0),
)
def test_no_span_of_a_window_ever_holds_more_than_its_capacity(
    gaps: list[float], capacity: int, span: float
) -> None:
    """Whatever the arrivals, the send times are in order and any span of the window (so any
    fixed window the venue counts, wherever it starts) holds at most ``capacity`` requests."""
    clock = FakeClock()
    budget = LocalRateBudget(clock)
    limit = RateLimit(LimitModel.WINDOW, capacity=capacity, per_second=capacity / span)
    sent: list[float] = []
    for gap in gaps:
        clock.now += gap
        sent.append(_sent_at(budget, clock, "scope", limit))
    assert sent == sorted(sent)
    for i, start in enumerate(sent):
        inside = [t for t in sent[i:] if t < start + limit.span]
        assert len(inside) <= capacity


def _kraken_counter_refuses(sent: list[float], limit: RateLimit) -> int:
    """How many of ``sent`` Kraken's counter (as the sandbox keeps it) would refuse."""
    counter, at, refused = 0.0, None, 0
    for t in sent:
        if at is not None:
            counter = max(0.0, counter - limit.per_second * (t - at))
        at = t
        if counter + 1 <= limit.capacity + 1e-9:
            counter += 1
        else:
            refused += 1
    return refused


@given(gaps=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=60))
def test_a_bucket_never_overfills_krakens_counter(gaps: list[float]) -> None:
    """Kraken's Starter counter (15, decaying 0.33/s): paced calls are never refused, the first
    15 go at once, and a full counter makes the next call wait about 1/0.33 s."""
    clock = FakeClock()
    budget = LocalRateBudget(clock)
    limit = VENUE_PACING["kraken"].limit
    sent = []
    for gap in gaps:
        clock.now += gap
        sent.append(_sent_at(budget, clock, "key", limit))
    assert sent == sorted(sent)
    assert _kraken_counter_refuses(sent, limit) == 0


def test_a_full_bucket_waits_for_one_call_of_decay() -> None:
    clock = FakeClock()
    budget = LocalRateBudget(clock)
    limit = RateLimit(LimitModel.BUCKET, capacity=15, per_second=0.33)
    assert [budget.reserve("k", limit) for _ in range(15)] == [0.0] * 15
    assert budget.reserve("k", limit) == pytest.approx(1 / 0.33 + limit.margin)


def test_published_limits_in_requests() -> None:
    """Coinbase 30/s per key, dYdX 100 per 10 s per IP, Kraken Starter 15 decaying 0.33/s per
    key, Binance 6,000 weight a minute per IP = 300 account calls (weight 20)."""
    coinbase, dydx = VENUE_PACING["coinbase"], VENUE_PACING["dydx"]
    kraken, binance = VENUE_PACING["kraken"], VENUE_PACING["binance"]
    assert (coinbase.scope, coinbase.limit.capacity, coinbase.limit.span) == ("key", 30, 1.0)
    assert (dydx.scope, dydx.limit.capacity, dydx.limit.span) == ("ip", 100, 10.0)
    assert (kraken.scope, kraken.limit.model, kraken.limit.capacity) == (
        "key",
        LimitModel.BUCKET,
        15,
    )
    assert (binance.scope, binance.limit.capacity, binance.limit.span) == ("ip", 300, 60.0)


def test_scopes_follow_the_venue_and_hide_the_key() -> None:
    """Per key on Coinbase/Kraken (the key only as a digest), per base_url on dYdX/Binance;
    an account's own tier (roster rate_limit, in the venue's unit) replaces the default."""
    budget = LocalRateBudget()
    one = AccountConfig(id="a", exchange="coinbase", base_url="http://h:1")
    pacer = pacer_for(one, budget, "organizations/x/apiKeys/secret-key-name")
    assert pacer is not None
    assert pacer.scope == key_scope(
        "coinbase", "http://h:1", "organizations/x/apiKeys/secret-key-name"
    )
    assert "secret-key-name" not in pacer.scope
    other = pacer_for(one, budget, "another-key")
    assert other is not None
    assert other.scope != pacer.scope
    dydx = AccountConfig(id="d", exchange="dydx", base_url="http://h:2", address="dydx1abc")
    dydx_pacer = pacer_for(dydx, budget)
    assert dydx_pacer is not None
    assert dydx_pacer.scope == ip_scope("dydx", "http://h:2")
    tiered = AccountConfig(
        id="b",
        exchange="binance",
        base_url="http://h:3",
        rate_limit=AccountRateLimit(per_second=Decimal("20"), burst=1200),
    )
    tiered_pacer = pacer_for(tiered, budget, "k")
    assert tiered_pacer is not None
    assert (tiered_pacer.limit.capacity, tiered_pacer.limit.per_second) == (60, 1.0)
    assert pacer_for(AccountConfig(id="c", exchange="ccxt:okx"), budget, "k") is None


def test_limits_are_refused_when_they_allow_nothing() -> None:
    with pytest.raises(ValueError, match="capacity"):
        RateLimit(LimitModel.WINDOW, capacity=0, per_second=1.0)
    with pytest.raises(ValueError, match="at least one request"):
        RateLimit.in_requests(LimitModel.WINDOW, per_second=10, burst=10, cost=20)


def _roster(tmp_path: Path, accounts: str) -> Roster:
    path = tmp_path / "accounts.toml"
    path.write_text(accounts, encoding="utf-8")
    return load_roster(path, load_settings({}))


SHARED = """
[book]
source = "file"
path = "book.json"

[[accounts]]
id = "d0"
exchange = "dydx"
base_url = "http://127.0.0.1:9001"
address = "dydx1abc"
rate_limit = {{ per_second = "5", burst = 50 }}

[[accounts]]
id = "d1"
exchange = "dydx"
base_url = "{url}"
address = "dydx1abc"
subaccount = 1
{limit}
"""


def test_accounts_sharing_a_per_ip_budget_must_agree_on_its_limit(tmp_path: Path) -> None:
    """One dYdX base_url is one budget: two accounts there with different rate_limits are a
    configuration error naming both; the same limit, or another base_url, is fine."""
    same = 'rate_limit = { per_second = "5", burst = 50 }'
    check_shared_budgets(_roster(tmp_path, SHARED.format(url="http://127.0.0.1:9001", limit=same)))
    check_shared_budgets(_roster(tmp_path, SHARED.format(url="http://127.0.0.1:9002", limit="")))
    with pytest.raises(ConfigError, match=r"account 'd1': field 'rate_limit'.*'d0'"):
        check_shared_budgets(
            _roster(tmp_path, SHARED.format(url="http://127.0.0.1:9001", limit=""))
        )


def test_binances_weight_guard_follows_the_accounts_tier() -> None:
    """The in-process weight guard allows the published 6,000 a minute, or the account's own
    tier (a guard stuck at the default would stall a faster tier for a minute)."""
    published = AccountConfig(id="b", exchange="binance")
    assert binance_weight_limit(published) == 6000
    faster = AccountConfig(
        id="b",
        exchange="binance",
        rate_limit=AccountRateLimit(per_second=Decimal(200), burst=12000),
    )
    assert binance_weight_limit(faster) == 12000
    tiny = AccountConfig(
        id="b", exchange="binance", rate_limit=AccountRateLimit(per_second=Decimal("0.1"), burst=20)
    )
    assert binance_weight_limit(tiny) == 20


def test_budget_pressure_is_a_cycles_requests_over_the_budgets_burst() -> None:
    """A per-IP venue counts every account at its base_url; a per-key one its own request;
    an account's tier replaces the published burst; ccxt venues are not paced (0)."""
    dydx = [
        AccountConfig(id=f"d{i}", exchange="dydx", base_url="http://h:2", address="dydx1abc")
        for i in range(4)
    ]
    lone_dydx = AccountConfig(id="e", exchange="dydx", base_url="http://h:9", address="dydx1x")
    binance = [AccountConfig(id=f"b{i}", exchange="binance", base_url="http://h:3") for i in (1, 2)]
    coinbase = AccountConfig(id="c", exchange="coinbase", base_url="http://h:1")
    kraken = AccountConfig(
        id="k",
        exchange="kraken",
        rate_limit=AccountRateLimit(per_second=Decimal("1"), burst=20),
    )
    other = AccountConfig(id="x", exchange="ccxt:okx")
    pressures = budget_pressures([*dydx, lone_dydx, *binance, coinbase, kraken, other])
    assert pressures == {
        **dict.fromkeys(["d0", "d1", "d2", "d3"], 4 / 100),
        "e": 1 / 100,
        "b1": 2 / 300,  # 6,000 weight a minute, 20 a call: a burst of 300 calls
        "b2": 2 / 300,
        "c": 1 / 30,
        "k": 1 / 20,
        "x": 0.0,
    }
