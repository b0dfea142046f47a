"""A smoke run of the bench (``python -m bench --scenario smoke``), so that it cannot rot.

It runs the real pipeline (sandbox endpoints, Redis, PostgreSQL, two Celery worker processes)
on a tiny scenario and checks that the run completes, that its reports match the seeded
findings and that the table carries a PASS/FAIL column per target. It asserts no timing; the
floor's arithmetic (computed, not measured) is pinned alongside.
"""

from __future__ import annotations

import os

import pytest

from bench import harness
from bench.floor import EndpointLoad, FixedWindow, cycle_floor, scope_seconds
from bench.report import FAIL, NOT_APPLICABLE, PASS, TARGETS, render_table
from bench.run import EXTRA_WARMUP_MAX, execute, plan_runs, warmed_up
from bench.scenarios import S2, generate


@pytest.fixture
def services() -> None:
    """Redis and PostgreSQL on loopback: skip when unreachable, except on CI (fail)."""
    try:
        harness.check_redis()
        harness.postgres_admin()
    except harness.ServiceUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def test_a_scope_gets_its_burst_at_once_and_each_further_batch_a_window_later() -> None:
    """Under a fixed window of R per W, n requests take latency + ((n - 1) // R) × W."""
    limit = FixedWindow(requests=100, window_s=10.0)
    assert scope_seconds(100, 0.1, limit) == pytest.approx(0.1)
    assert scope_seconds(250, 0.1, limit) == pytest.approx(20.1)
    assert scope_seconds(7, 0.2, None) == pytest.approx(0.2)


def test_the_confirming_refetch_waits_for_a_window_the_first_round_filled() -> None:
    """The re-fetch of flagged accounts counts against the first round's window."""
    limit = FixedWindow(requests=100, window_s=10.0)
    full = EndpointLoad("dydx", 0.1, (100,), limit, confirm_requests=(12,))
    roomy = EndpointLoad("dydx", 0.1, (50,), limit, confirm_requests=(12,))
    assert cycle_floor([full]).seconds == pytest.approx(10.1)
    assert cycle_floor([roomy]).seconds == pytest.approx(0.2)
    assert cycle_floor([roomy], confirm_delay_s=5).seconds == pytest.approx(5.2)


def test_generated_scenario_seeds_findings_and_spreads_accounts_round_robin() -> None:
    """S2: 1000 accounts on 10 endpoints of the four venue kinds, 100 each, breaks seeded."""
    generated = generate(S2)
    assert [len(e.accounts) for e in generated.endpoints] == [100] * 10
    kinds = [e.kind.name for e in generated.endpoints]
    assert kinds[:4] == ["coinbase", "dydx", "kraken", "binance"]
    assert sorted(kinds) == ["binance"] * 2 + ["coinbase"] * 3 + ["dydx"] * 3 + ["kraken"] * 2
    statuses = list(generated.expected.values())
    assert statuses.count("WARNING") == 80
    assert statuses.count("CRITICAL") == 40


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.usefixtures("services")
def test_smoke_run_completes_with_a_verdict_per_target() -> None:
    """Two workers reconcile the tiny scenario correctly and the table has every target."""
    runs = plan_runs("smoke", workers=2)
    results = execute(runs, cycles=1, warmup=1, cycle_timeout=60)

    assert len(results) == 1
    result = results[0]
    assert result.workers == 2
    assert len(result.walls) == 1
    assert 1 <= result.warmups <= 1 + EXTRA_WARMUP_MAX
    assert result.correct, f"{result.wrong_reports} report(s) differ from the seeded findings"
    assert result.audit_seconds, "the workers' log gave no audit write time"
    table = render_table(results)
    header, _separator, row = table.splitlines()
    for target in TARGETS:
        assert target in header
    verdicts = [cell.strip() for cell in row.strip("|").split("|")][-len(TARGETS) :]
    assert set(verdicts) <= {PASS, FAIL, NOT_APPLICABLE}
    assert verdicts[0] == PASS  # "correct"


def test_the_warm_up_lasts_until_every_worker_has_run_a_join() -> None:
    """At least ``--warmup`` cycles; then until every worker has joined a cycle, or
    EXTRA_WARMUP_MAX cycles more."""
    assert not warmed_up(0, 1, joined=True)
    assert not warmed_up(1, 2, joined=True)
    assert warmed_up(1, 1, joined=True)
    assert not warmed_up(1, 1, joined=False)
    assert not warmed_up(EXTRA_WARMUP_MAX, 1, joined=False)
    assert warmed_up(1 + EXTRA_WARMUP_MAX, 1, joined=False)
    assert warmed_up(0, 0, joined=True)
    assert not warmed_up(0, 0, joined=False)  # fresh workers: even --warmup 0 waits for a join
