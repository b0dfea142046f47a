"""The audit store on SQLite: migration, exact round-trips, idempotence, append-only rows."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Engine, delete, inspect, select, update
from sqlalchemy.exc import IntegrityError

from domain.policy import Policy, PriceTable
from domain.reconcile import reconcile_account
from domain.report import ErrorKind, FetchError, Report, Status
from domain.serialization import report_to_json
from infra.db import (
    AuditRepository,
    AuditStoreError,
    create_audit_engine,
    downgrade,
    ensure_schema,
    upgrade,
)
from infra.db.migrate import is_at_head
from infra.db.models import AUDIT_TABLE, MUTABLE_COLUMNS, Base

T = TypeVar("T")

AUDIT = AUDIT_TABLE
FACT_COLUMNS = [c.name for c in AUDIT.columns if c.name not in MUTABLE_COLUMNS]
T0 = datetime(2026, 11, 24, 0, 0, 1, tzinfo=UTC)
PRICES = PriceTable({"BTC": Decimal("60000")})


def make_report(
    *,
    cycle_id: str = "cycle-1",
    account_id: str = "cb-main",
    exchange: str = "coinbase",
    reconciliation_id: str | None = None,
    at: datetime = T0,
    local: dict[str, str] | None = None,
    venue: dict[str, str] | FetchError | None = None,
) -> Report:
    """A report computed by the real domain code, with one WARNING mismatch by default."""
    book = {"BTC": "1.25", "ETH": "0.1000000000000000001"} if local is None else local
    seen = {"BTC": "1.27", "ETH": "0.1000000000000000001"} if venue is None else venue
    return reconcile_account(
        reconciliation_id=reconciliation_id or f"{cycle_id}:{account_id}",
        cycle_id=cycle_id,
        account_id=account_id,
        exchange=exchange,
        reconciled_at=at,
        local={k: Decimal(v) for k, v in book.items()},
        venue=seen if isinstance(seen, FetchError) else {k: Decimal(v) for k, v in seen.items()},
        policy=Policy(),
        prices=PRICES,
    )


def tampered_value(column: Column[Any]) -> object:
    """A value of ``column``'s type unlike any this module's reports hold."""
    return {int: 999_999, str: "tampered", datetime: datetime(2000, 1, 1, tzinfo=UTC)}[
        column.type.python_type
    ]


def raw_row(engine: Engine, reconciliation_id: str) -> dict[str, Any]:
    """The stored row of ``reconciliation_id`` as a plain dict of its columns."""
    with engine.connect() as conn:
        row = conn.execute(
            select(AUDIT).where(AUDIT.c.reconciliation_id == reconciliation_id)
        ).one()
    return dict(row._mapping)


def run_together(*calls: Callable[[], T]) -> list[T]:
    """Run ``calls`` in threads released at the same instant; re-raise any failure."""
    barrier = threading.Barrier(len(calls))

    def start(call: Callable[[], T]) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(start, call) for call in calls]]


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    engine = create_audit_engine(sqlite_url)
    ensure_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def repo(engine: Engine) -> AuditRepository:
    return AuditRepository(engine)


def test_ensure_schema_migrates_an_empty_file(tmp_path: Path) -> None:
    """An empty SQLite file gets the audit table, its indexes and its triggers on first use."""
    path = tmp_path / "empty.db"
    path.touch()
    engine = create_audit_engine(f"sqlite:///{path}")
    try:
        ensure_schema(engine)
        assert is_at_head(engine)
        inspector = inspect(engine)
        assert {c["name"] for c in inspector.get_columns("reconciliation_audit")} == {
            c.name for c in AUDIT.columns
        }
        assert {
            tuple(i["column_names"]) for i in inspector.get_indexes("reconciliation_audit")
        } == {
            ("exchange_id", "reconciliation_timestamp"),
            ("account_id", "reconciliation_timestamp"),
            ("account_id", "id"),
            ("status",),
        }
        with engine.connect() as conn:
            triggers = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'trigger'"
                " AND tbl_name = 'reconciliation_audit'"
            ).scalars()
            assert set(triggers) == {
                "reconciliation_audit_refuse_update",
                "reconciliation_audit_refuse_delete",
            }
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


def test_concurrent_first_use_migrates_once(tmp_path: Path) -> None:
    """Two processes' engines starting together on an empty file both end at head, no error."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    engines = [create_audit_engine(url), create_audit_engine(url)]
    try:
        run_together(*[lambda e=e: ensure_schema(e) for e in engines])
        assert all(is_at_head(e) for e in engines)
    finally:
        for e in engines:
            e.dispose()


def test_models_match_the_migration(engine: Engine) -> None:
    """The migration creates exactly the table the models describe (Alembic finds no diff)."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_round_trip_keeps_every_fact_exactly(engine: Engine, repo: AuditRepository) -> None:
    """Reports read back equal what was written, amounts as the very same decimal strings."""
    warning = make_report(account_id="cb-main")
    failed = make_report(
        account_id="kr-main",
        exchange="kraken",
        at=(T0 + timedelta(microseconds=250)).astimezone(timezone(timedelta(hours=2))),
        venue=FetchError(ErrorKind.TIMEOUT, "kraken timed out after 4 attempts"),
    )
    assert warning.status is Status.WARNING
    assert failed.status is Status.ERROR

    assert repo.record_cycle([warning, failed]) == 2

    for original in (warning, failed):
        stored = repo.get(original.reconciliation_id)
        assert stored == original
        assert stored is not None
        assert report_to_json(stored) == report_to_json(original)
        assert stored.reconciled_at.tzinfo is UTC
    row = raw_row(engine, warning.reconciliation_id)
    assert '"ETH":"0.1000000000000000001"' in row["local_balances_json"]
    assert row["status"] == "WARNING"
    assert row["discrepancy_count"] == 1
    assert row["recovery_attempted"] is False
    assert row["created_at"].tzinfo is UTC
    assert row["exchange_id"] == "coinbase"
    assert raw_row(engine, failed.reconciliation_id)["error_json"] == (
        '{"kind":"timeout","message":"kraken timed out after 4 attempts"}'
    )


def test_get_unknown_id_is_none(repo: AuditRepository) -> None:
    """Asking for an id never recorded gives None."""
    assert repo.get("never-written") is None


def test_rewriting_a_cycle_writes_nothing(repo: AuditRepository) -> None:
    """A redelivered cycle (same reconciliation ids) writes 0 new rows and changes nothing."""
    reports = [make_report(account_id="a"), make_report(account_id="b")]
    assert repo.record_cycle(reports) == 2
    assert repo.record_cycle(reports) == 0
    assert repo.record_cycle([*reports, make_report(account_id="c")]) == 1
    assert repo.count_for_cycle("cycle-1") == 3


def test_empty_cycle_writes_nothing(repo: AuditRepository) -> None:
    """A cycle without reports is a no-op."""
    assert repo.record_cycle([]) == 0


def test_history_filters_orders_and_limits(repo: AuditRepository) -> None:
    """History is newest first, filtered by account or venue, and cut at ``limit``."""
    for minute in range(3):
        at = T0 + timedelta(minutes=minute)
        repo.record_cycle(
            [
                make_report(cycle_id=f"c{minute}", account_id="cb-main", at=at),
                make_report(cycle_id=f"c{minute}", account_id="kr-main", exchange="kraken", at=at),
            ]
        )

    everything = repo.history()
    assert [r.reconciled_at for r in everything] == sorted(
        (r.reconciled_at for r in everything), reverse=True
    )
    assert len(everything) == 6
    assert [r.cycle_id for r in repo.history(account_id="cb-main")] == ["c2", "c1", "c0"]
    assert {r.account_id for r in repo.history(exchange="kraken")} == {"kr-main"}
    assert [r.cycle_id for r in repo.history(exchange="kraken", limit=2)] == ["c2", "c1"]
    assert repo.history(account_id="cb-main", exchange="kraken") == []
    with pytest.raises(ValueError, match="limit"):
        repo.history(limit=0)


@pytest.mark.parametrize("column", FACT_COLUMNS)
def test_update_of_a_recorded_fact_is_refused(
    engine: Engine, repo: AuditRepository, column: str
) -> None:
    """The database refuses to change any recorded-fact column of a written row."""
    report = make_report()
    repo.record_cycle([report])
    before = raw_row(engine, report.reconciliation_id)

    with pytest.raises(IntegrityError, match="append-only"), engine.begin() as conn:
        conn.execute(
            update(AUDIT)
            .where(AUDIT.c.reconciliation_id == report.reconciliation_id)
            .values({column: tampered_value(AUDIT.c[column])})
        )
    assert raw_row(engine, report.reconciliation_id) == before


def test_recovery_and_notes_may_be_recorded(engine: Engine, repo: AuditRepository) -> None:
    """The recovery columns and operator_notes can be set; the report itself is unchanged."""
    report = make_report()
    repo.record_cycle([report])
    with engine.begin() as conn:
        conn.execute(
            update(AUDIT)
            .where(AUDIT.c.reconciliation_id == report.reconciliation_id)
            .values(
                recovery_attempted=True,
                recovery_status="FAILED",
                recovery_details_json=(
                    '{"checked_at":"2026-11-24T00:00:06Z","found_status":"WARNING",'
                    '"discrepancies":[],"error":null}'
                ),
                operator_notes="confirmed with the desk",
            )
        )
    row = raw_row(engine, report.reconciliation_id)
    assert (row["recovery_attempted"], row["recovery_status"], row["operator_notes"]) == (
        True,
        "FAILED",
        "confirmed with the desk",
    )
    stored = repo.get(report.reconciliation_id)
    assert stored is not None
    assert dataclasses.replace(stored, recovery=None) == report  # the facts are unchanged
    assert stored.recovery is not None
    assert stored.recovery.status.value == "FAILED"


def test_delete_is_refused(engine: Engine, repo: AuditRepository) -> None:
    """The database refuses to delete audit rows."""
    repo.record_cycle([make_report()])
    with pytest.raises(IntegrityError, match="append-only"), engine.begin() as conn:
        conn.execute(delete(AUDIT))
    assert repo.count_for_cycle("cycle-1") == 1


def test_a_failing_cycle_writes_nothing(repo: AuditRepository) -> None:
    """When one row of a cycle is refused, the whole cycle is rolled back, and the error
    message quotes no amount."""
    first = make_report(reconciliation_id="r-1")
    same_account_again = make_report(reconciliation_id="r-2")

    with pytest.raises(AuditStoreError, match="nothing written") as caught:
        repo.record_cycle([first, same_account_again])

    assert repo.count_for_cycle("cycle-1") == 0
    assert "1.25" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_an_unreachable_database_is_an_audit_store_error(tmp_path: Path) -> None:
    """A database that cannot be opened raises AuditStoreError, not a driver error."""
    engine = create_audit_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'audit.db'}")
    try:
        with pytest.raises(AuditStoreError, match="OperationalError"):
            AuditRepository(engine).record_cycle([make_report()])
    finally:
        engine.dispose()


def test_concurrent_writers_of_two_cycles_both_land(sqlite_url: str, engine: Engine) -> None:
    """Two workers writing two cycles of one account at once each write their row, intact."""
    engines = [create_audit_engine(sqlite_url), create_audit_engine(sqlite_url)]
    try:
        written = run_together(
            *[
                lambda e=e, n=n: AuditRepository(e).record_cycle(
                    [make_report(cycle_id=f"cycle-{n}", at=T0 + timedelta(seconds=n))]
                )
                for n, e in enumerate(engines)
            ]
        )
    finally:
        for e in engines:
            e.dispose()
    assert written == [1, 1]
    repo = AuditRepository(engine)
    assert [r.cycle_id for r in repo.history(account_id="cb-main")] == ["cycle-1", "cycle-0"]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def test_concurrent_redeliveries_write_one_row(sqlite_url: str, engine: Engine) -> None:
    """The same cycle written twice at once (a redelivered task) lands exactly once."""
    engines = [create_audit_engine(sqlite_url), create_audit_engine(sqlite_url)]
    try:
        written = run_together(
            *[lambda e=e: AuditRepository(e).record_cycle([make_report()]) for e in engines]
        )
    finally:
        for e in engines:
            e.dispose()
    assert sorted(written) == [0, 1]
    assert AuditRepository(engine).count_for_cycle("cycle-1") == 1


def test_downgrade_removes_the_table_and_upgrade_restores_it(engine: Engine) -> None:
    """The migration's downgrade drops table and triggers; upgrading again recreates them."""
    downgrade(engine)
    with engine.connect() as conn:
        left = conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE name LIKE 'reconciliation_audit%'"
        ).scalars()
        assert list(left) == []
    assert not is_at_head(engine)
    upgrade(engine)
    assert is_at_head(engine)
