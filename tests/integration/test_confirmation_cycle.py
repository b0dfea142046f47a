"""The confirming re-fetch end to end: in-process cycle, real SQLite audit store."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.cycle import AccountPlan, CycleContext, compare_and_report, fetch_attempt, run_cycle
from domain.confirmation import confirmed_cycle_status
from domain.policy import Policy, PriceTable
from domain.report import Cycle, ErrorKind, RecoveryStatus, SourceError, Status
from infra.db.engine import create_audit_engine
from infra.db.migrate import ensure_schema, upgrade
from infra.db.repository import AuditRepository
from infra.prices.static import StaticPrices
from infra.venues.errors import VenueUnavailable
from infra.venues.retry import RetryPolicy


class ScriptedVenue:
    """Answers each fetch with the next scripted balance (or raises it)."""

    def __init__(self, *answers: dict[str, Decimal] | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    def fetch_balances(self) -> dict[str, Decimal]:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)


class Book:
    def balances(self, account_id: str) -> dict[str, Decimal]:
        return {"BTC": Decimal("1.25")}


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[AuditRepository]:
    engine = create_audit_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    ensure_schema(engine)
    yield AuditRepository(engine)
    engine.dispose()


def context(repository: AuditRepository, sleeps: list[float]) -> CycleContext:
    return CycleContext(
        book=Book(),
        prices=StaticPrices(PriceTable({"BTC": Decimal(60000)})),
        policy=Policy(),
        audit=repository,
        retry=RetryPolicy(retries=0),
        clock=lambda: datetime.now(UTC),
        confirm_delay=5.0,
        sleep=sleeps.append,
    )


def test_timing_break_is_recorded_as_recovered_and_counts_as_success(
    repository: AuditRepository,
) -> None:
    """A break gone on the second look: recovery SUCCESS in the row, facts kept, exit SUCCESS."""
    timing = ScriptedVenue({"BTC": Decimal("1.27")}, {"BTC": Decimal("1.25")})
    steady = ScriptedVenue({"BTC": Decimal("1.25")})
    sleeps: list[float] = []
    plans = [AccountPlan("timing", "coinbase", timing), AccountPlan("steady", "coinbase", steady)]
    cycle = run_cycle(cycle_id="c1", plans=plans, context=context(repository, sleeps))

    assert sleeps == [5.0]  # the confirm delay, once for the cycle
    assert (timing.calls, steady.calls) == (2, 1)  # clean accounts are not re-fetched
    reports = {r.account_id: r for r in cycle.reports}
    assert reports["timing"].status is Status.WARNING
    assert reports["timing"].recovery is not None
    assert reports["timing"].recovery.status is RecoveryStatus.SUCCESS
    assert reports["steady"].recovery is None
    assert confirmed_cycle_status(cycle) is Status.SUCCESS

    stored = {r.account_id: r for r in repository.cycle_reports("c1")}
    assert stored == reports  # facts and recovery rebuilt from the row
    with repository._engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT status, recovery_attempted, recovery_status FROM reconciliation_audit"
                " WHERE account_id = 'timing'"
            )
        ).one()
    assert tuple(row) == ("WARNING", 1, "SUCCESS")


def test_a_break_that_stays_or_a_failed_re_fetch_is_confirmed(
    repository: AuditRepository,
) -> None:
    """FAILED when the break remains, and when the re-fetch fails (its error in details)."""
    stays = ScriptedVenue({"BTC": Decimal("1.27")})
    fails = ScriptedVenue({"BTC": Decimal("1.27")}, VenueUnavailable("coinbase: HTTP 503"))
    plans = [AccountPlan("stays", "coinbase", stays), AccountPlan("fails", "coinbase", fails)]
    cycle = run_cycle(cycle_id="c2", plans=plans, context=context(repository, []))

    reports = {r.account_id: r for r in cycle.reports}
    for account in ("stays", "fails"):
        recovery = reports[account].recovery
        assert recovery is not None
        assert recovery.status is RecoveryStatus.FAILED
    failed = reports["fails"].recovery
    assert failed is not None
    assert failed.error is not None
    assert failed.error.kind.value == "unavailable"
    assert confirmed_cycle_status(cycle) is Status.WARNING
    assert {r.account_id: r.recovery for r in repository.cycle_reports("c2")} == {
        a: r.recovery for a, r in reports.items()
    }


@pytest.mark.postgres
def test_postgres_lets_only_the_recovery_columns_change(
    postgres_url: Callable[[], str],
) -> None:
    """On Postgres the confirmation lands in the recovery columns; the facts stay refused."""
    engine = create_audit_engine(postgres_url())
    try:
        upgrade(engine)
        repository = AuditRepository(engine)
        stays = ScriptedVenue({"BTC": Decimal("1.27")})
        plans = [AccountPlan("stays", "coinbase", stays)]
        cycle = run_cycle(cycle_id="pg", plans=plans, context=context(repository, []))
        (stored,) = repository.cycle_reports("pg")
        assert stored == cycle.reports[0]
        assert stored.recovery is not None
        assert stored.recovery.status is RecoveryStatus.FAILED
        with pytest.raises(DBAPIError), engine.begin() as connection:
            connection.execute(text("UPDATE reconciliation_audit SET status = 'SUCCESS'"))
    finally:
        engine.dispose()


def test_a_bug_in_one_second_look_confirms_only_that_break(
    repository: AuditRepository,
) -> None:
    """A venue client that raises something unexpected (a bug, not a venue error) on the
    re-fetch: its break is confirmed with an internal error; the other break is judged on its
    own re-fetch; the cycle written in the first look stays whole."""
    buggy = ScriptedVenue({"BTC": Decimal("1.27")}, RuntimeError("a bug"))
    timing = ScriptedVenue({"BTC": Decimal("1.27")}, {"BTC": Decimal("1.25")})
    plans = [AccountPlan("buggy", "coinbase", buggy), AccountPlan("timing", "coinbase", timing)]
    cycle = run_cycle(cycle_id="c3", plans=plans, context=context(repository, []))

    reports = {r.account_id: r for r in cycle.reports}
    buggy_recovery = reports["buggy"].recovery
    assert buggy_recovery is not None
    assert buggy_recovery.status is RecoveryStatus.FAILED
    assert buggy_recovery.error is not None
    assert buggy_recovery.error.kind.value == "unavailable"
    assert buggy_recovery.error.message == "internal error (RuntimeError)"
    timing_recovery = reports["timing"].recovery
    assert timing_recovery is not None
    assert timing_recovery.status is RecoveryStatus.SUCCESS
    assert {r.account_id: r.recovery for r in repository.cycle_reports("c3")} == {
        a: r.recovery for a, r in reports.items()
    }


class ChangingBook:
    """A book whose BTC figure the test changes between two comparisons."""

    def __init__(self, btc: str) -> None:
        self.btc = Decimal(btc)

    def balances(self, account_id: str) -> dict[str, Decimal]:
        return {"BTC": self.btc}


def test_a_resumed_cycle_goes_by_its_recorded_rows(repository: AuditRepository) -> None:
    """A join that runs again for a cycle already written (redelivered, or retried after a
    failed confirmation write) compares afresh, but its cycle is the recorded one: the book
    changed meanwhile (the break gone) and still the WARNING row is what gets confirmed and
    returned."""
    book = ChangingBook("1.25")
    ctx = replace(context(repository, []), book=book)
    plans = [AccountPlan("acct", "coinbase", ScriptedVenue({"BTC": Decimal("1.27")}))]

    def join() -> Cycle:
        return compare_and_report(
            cycle_id="c4",
            started_at=datetime.now(UTC),
            plans=plans,
            outcomes={"acct": {"BTC": Decimal("1.27")}},
            context=ctx,
        )

    first = join()
    assert first.reports[0].status is Status.WARNING
    book.btc = Decimal("1.27")  # the book caught up: a fresh comparison finds nothing
    again = join()
    assert again.reports == first.reports  # the recorded facts, not the fresh comparison
    assert [r.account_id for r in repository.cycle_reports("c4")] == ["acct"]  # one row


def test_a_bug_in_one_fetch_attempt_is_that_accounts_error_and_logs_no_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The workers' single attempt (fetch_attempt): a client raising something unexpected is
    that account's permanent error; its neighbour's balances come back; the log line names
    the exception's type and where it happened, never its message (it could quote a
    balance)."""
    buggy = ScriptedVenue(ValueError("bad amount 123.45 in field"))
    fine = ScriptedVenue({"BTC": Decimal("1.25")})
    plans = [AccountPlan("buggy", "coinbase", buggy), AccountPlan("fine", "coinbase", fine)]
    with caplog.at_level(logging.ERROR, logger="app.cycle"):
        results = fetch_attempt(plans)

    assert results["fine"] == {"BTC": Decimal("1.25")}
    error = results["buggy"]
    assert isinstance(error, SourceError)
    assert (error.kind, str(error)) == (ErrorKind.UNAVAILABLE, "internal error (ValueError)")
    assert "venue fetch crashed: account=buggy exchange=coinbase error=ValueError" in caplog.text
    assert "fetch_balances" in caplog.text  # the frames, for whoever fixes it
    assert "123.45" not in caplog.text
