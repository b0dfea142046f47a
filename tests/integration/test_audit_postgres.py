"""The audit store on a real PostgreSQL: migration, idempotence, refusals, concurrency."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta, timezone

import pytest
from sqlalchemy import Engine, delete, inspect, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import Executable

from domain.report import ErrorKind, FetchError
from domain.serialization import report_to_json
from infra.db import (
    AuditRepository,
    AuditStoreError,
    SchemaNotReady,
    create_audit_engine,
    downgrade,
    ensure_schema,
    upgrade,
)
from infra.db.migrate import is_at_head
from tests.unit.test_audit_repository_sqlite import (
    AUDIT,
    FACT_COLUMNS,
    T0,
    make_report,
    raw_row,
    run_together,
    tampered_value,
)

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def database_url(postgres_url: Callable[[], str]) -> str:
    """One migrated throwaway database shared by this module's tests."""
    url = postgres_url()
    upgrade(url)
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_audit_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def repo(engine: Engine) -> AuditRepository:
    return AuditRepository(engine)


@pytest.fixture
def cycle_id() -> str:
    """A cycle id of this test alone, so tests sharing the database never see each other."""
    return f"cycle-{uuid.uuid4().hex}"


def test_unmigrated_database_is_refused_until_upgraded(
    postgres_url: Callable[[], str],
) -> None:
    """ensure_schema refuses a database below head (naming `recon db upgrade`) and passes after
    the upgrade; downgrade removes everything again."""
    engine = create_audit_engine(postgres_url())
    try:
        with pytest.raises(SchemaNotReady, match="recon db upgrade"):
            ensure_schema(engine)
        upgrade(engine)
        ensure_schema(engine)
        assert inspect(engine).has_table("reconciliation_audit")

        downgrade(engine)
        assert not is_at_head(engine)
        assert not inspect(engine).has_table("reconciliation_audit")
        with engine.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'reconciliation_audit%'")
            ).scalar()
        assert left == 0
    finally:
        engine.dispose()


def test_round_trip_and_idempotence(engine: Engine, repo: AuditRepository, cycle_id: str) -> None:
    """Reports read back exactly as written (timestamps in UTC); a redelivery writes 0 rows."""
    reports = [
        make_report(cycle_id=cycle_id, account_id="cb-main"),
        make_report(
            cycle_id=cycle_id,
            account_id="kr-main",
            exchange="kraken",
            at=T0.astimezone(timezone(timedelta(hours=2))),
            venue=FetchError(ErrorKind.AUTH, "kraken refused the API key"),
        ),
    ]
    assert repo.record_cycle(reports) == 2
    assert repo.record_cycle(reports) == 0
    assert repo.count_for_cycle(cycle_id) == 2
    for original in reports:
        stored = repo.get(original.reconciliation_id)
        assert stored is not None
        assert report_to_json(stored) == report_to_json(original)
        assert stored.reconciled_at == T0
    row = raw_row(engine, reports[0].reconciliation_id)
    assert '"ETH":"0.1000000000000000001"' in row["local_balances_json"]
    assert row["created_at"].utcoffset() == timedelta(0)


def test_history_is_newest_first_per_account(repo: AuditRepository) -> None:
    """History filters by account and returns its reports newest first, cut at ``limit``."""
    account = f"acct-{uuid.uuid4().hex}"
    for n in range(3):
        repo.record_cycle(
            [make_report(cycle_id=f"c{n}-{account}", account_id=account, at=T0 + timedelta(n))]
        )
    assert [r.cycle_id for r in repo.history(account_id=account, limit=2)] == [
        f"c2-{account}",
        f"c1-{account}",
    ]


@pytest.mark.parametrize("column", FACT_COLUMNS)
def test_update_of_a_recorded_fact_is_refused(
    engine: Engine, repo: AuditRepository, cycle_id: str, column: str
) -> None:
    """The database refuses to change any recorded-fact column of a written row."""
    report = make_report(cycle_id=cycle_id)
    repo.record_cycle([report])
    before = raw_row(engine, report.reconciliation_id)
    with pytest.raises(IntegrityError, match="append-only"), engine.begin() as conn:
        conn.execute(
            update(AUDIT)
            .where(AUDIT.c.reconciliation_id == report.reconciliation_id)
            .values({column: tampered_value(AUDIT.c[column])})
        )
    assert raw_row(engine, report.reconciliation_id) == before


def test_recovery_and_notes_may_be_recorded(
    engine: Engine, repo: AuditRepository, cycle_id: str
) -> None:
    """The recovery columns and operator_notes can be set; the report itself is unchanged."""
    report = make_report(cycle_id=cycle_id)
    repo.record_cycle([report])
    with engine.begin() as conn:
        conn.execute(
            update(AUDIT)
            .where(AUDIT.c.reconciliation_id == report.reconciliation_id)
            .values(
                recovery_attempted=True,
                recovery_status="SUCCESS",
                recovery_details_json=(
                    '{"checked_at":"2026-11-24T00:00:06Z","found_status":"SUCCESS",'
                    '"discrepancies":[],"error":null}'
                ),
                operator_notes="timing break",
            )
        )
    assert raw_row(engine, report.reconciliation_id)["operator_notes"] == "timing break"
    stored = repo.get(report.reconciliation_id)
    assert stored is not None
    assert dataclasses.replace(stored, recovery=None) == report  # the facts are unchanged
    assert stored.recovery is not None
    assert stored.recovery.found_status is not None


@pytest.mark.parametrize(
    "statement",
    [delete(AUDIT), text("TRUNCATE reconciliation_audit")],
    ids=["delete", "truncate"],
)
def test_delete_and_truncate_are_refused(
    engine: Engine, repo: AuditRepository, cycle_id: str, statement: Executable
) -> None:
    """The database refuses DELETE and TRUNCATE of audit rows."""
    repo.record_cycle([make_report(cycle_id=cycle_id)])
    with pytest.raises(IntegrityError, match="append-only"), engine.begin() as conn:
        conn.execute(statement)
    assert repo.count_for_cycle(cycle_id) == 1


def test_a_failing_cycle_writes_nothing(repo: AuditRepository, cycle_id: str) -> None:
    """A cycle with one refused row is rolled back whole; the error quotes no amount."""
    reports = [
        make_report(cycle_id=cycle_id, account_id="other"),
        make_report(cycle_id=cycle_id, reconciliation_id=f"{cycle_id}-1"),
        make_report(cycle_id=cycle_id, reconciliation_id=f"{cycle_id}-2"),
    ]
    with pytest.raises(AuditStoreError, match="UniqueViolation") as caught:
        repo.record_cycle(reports)
    assert repo.count_for_cycle(cycle_id) == 0
    assert "1.25" not in str(caught.value)


def test_concurrent_writers_of_two_cycles_both_land(
    database_url: str, repo: AuditRepository
) -> None:
    """Two workers writing two cycles of one account at once each write their row."""
    account = f"acct-{uuid.uuid4().hex}"
    engines = [create_audit_engine(database_url), create_audit_engine(database_url)]
    try:
        written = run_together(
            *[
                lambda e=e, n=n: AuditRepository(e).record_cycle(
                    [make_report(cycle_id=f"c{n}-{account}", account_id=account)]
                )
                for n, e in enumerate(engines)
            ]
        )
    finally:
        for e in engines:
            e.dispose()
    assert written == [1, 1]
    assert {r.cycle_id for r in repo.history(account_id=account)} == {
        f"c0-{account}",
        f"c1-{account}",
    }


def test_concurrent_redeliveries_write_one_row(
    database_url: str, repo: AuditRepository, cycle_id: str
) -> None:
    """The same cycle written twice at once (a redelivered task) lands exactly once."""
    engines = [create_audit_engine(database_url), create_audit_engine(database_url)]
    try:
        written = run_together(
            *[
                lambda e=e: AuditRepository(e).record_cycle([make_report(cycle_id=cycle_id)])
                for e in engines
            ]
        )
    finally:
        for e in engines:
            e.dispose()
    assert sorted(written) == [0, 1]
    assert repo.count_for_cycle(cycle_id) == 1


def test_json_columns_are_lz4_compressed_and_a_large_cycle_round_trips(
    engine: Engine, repo: AuditRepository, cycle_id: str
) -> None:
    """Migration 0004 stores the JSON text columns with LZ4 (where the server has it), and a
    cycle of large rows (TOASTed, compressed) written by COPY reads back exactly."""
    with engine.connect() as connection:
        has_lz4 = connection.execute(
            text(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings"
                " WHERE name = 'default_toast_compression'"
            )
        ).scalar()
        methods: dict[str, str] = dict(
            connection.execute(
                text(
                    "SELECT attname, attcompression FROM pg_attribute"
                    " WHERE attrelid = 'reconciliation_audit'::regclass"
                    " AND attname LIKE '%\\_json' ESCAPE '\\'"
                )
            ).all()
        )
    expected = "l" if has_lz4 else ""
    for name in ("local_balances_json", "exchange_balances_json", "discrepancies_json"):
        assert methods[name] == expected, name
    big = {f"A{i:03d}": f"{i}.12345678" for i in range(200)}
    reports = [
        make_report(
            cycle_id=cycle_id,
            account_id=f"big-{n}",
            reconciliation_id=f"{cycle_id}-{n}",
            local=big,
            venue=big,
        )
        for n in range(3)
    ]
    assert repo.record_cycle(reports) == 3
    assert repo.record_cycle(reports) == 0
    back = {r.account_id: r for r in repo.cycle_reports(cycle_id)}
    assert back == {r.account_id: r for r in reports}
