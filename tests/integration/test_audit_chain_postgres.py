"""The tamper-evident audit chain on a real PostgreSQL: chained writes, the advisory lock
against forks, tamper detection behind disabled triggers, and the 0002 migration."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from infra.db import AuditRepository, create_audit_engine, downgrade, upgrade
from infra.db.verify import verify_audit
from tests.unit.test_audit_chain import (
    AUDIT_TABLE_NAME,
    assert_linear_chains,
    check_chain_across_cycles_and_accounts,
    check_concurrent_writers_build_one_chain,
    check_deleted_row_breaks_the_link,
    check_empty_table_is_probed,
    check_idempotent_rewrite_keeps_the_chain,
    check_tampered_fact_is_named,
)
from tests.unit.test_audit_repository_sqlite import T0, make_report

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def database_url(postgres_url: Callable[[], str]) -> str:
    """One throwaway database for this module; each test works in a schema of its own."""
    return postgres_url()


@pytest.fixture
def schema_url(database_url: str) -> Iterator[str]:
    """The URL of a new, empty schema of this test alone (verify reads the whole table)."""
    schema = f"t_{uuid.uuid4().hex}"
    admin = create_engine(database_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        url = make_url(database_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    finally:
        admin.dispose()


@pytest.fixture
def engine(schema_url: str) -> Iterator[Engine]:
    """A freshly migrated audit table in the test's own schema."""
    engine = create_audit_engine(schema_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def trigger_disabler(engine: Engine) -> Callable[[], None]:
    """Disables the table's user triggers, as the table's owner can."""

    def disable() -> None:
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {AUDIT_TABLE_NAME} DISABLE TRIGGER USER"))

    return disable


def test_chain_across_cycles_and_accounts(engine: Engine) -> None:
    """Rows are chained per account across cycles, and verification finds nothing."""
    check_chain_across_cycles_and_accounts(engine)


def test_idempotent_rewrite_keeps_the_chain(engine: Engine) -> None:
    """Re-recording reports adds nothing and never advances an account's head."""
    check_idempotent_rewrite_keeps_the_chain(engine)


def test_concurrent_writers_build_one_chain(engine: Engine) -> None:
    """Two threads appending to one account at once leave one linear chain (advisory lock)."""
    check_concurrent_writers_build_one_chain(engine, rounds=15)


def test_tampered_fact_is_named(engine: Engine) -> None:
    """A fact updated behind disabled triggers is named by id and reconciliation_id."""
    check_tampered_fact_is_named(engine, trigger_disabler(engine))


def test_deleted_row_breaks_the_link(engine: Engine) -> None:
    """A row deleted behind disabled triggers shows as a broken link on the next row."""
    check_deleted_row_breaks_the_link(engine, trigger_disabler(engine))


def test_empty_table_is_probed(engine: Engine) -> None:
    """verify probes an empty table's refusal with a rolled-back row."""
    check_empty_table_is_probed(engine, trigger_disabler(engine))


def test_dropped_trigger_is_reported(engine: Engine) -> None:
    """Dropping only the DELETE trigger is reported as a DELETE accepted, nothing else."""
    AuditRepository(engine).record_cycle([make_report()])
    with engine.begin() as conn:
        conn.execute(text(f"DROP TRIGGER reconciliation_audit_refuse_delete ON {AUDIT_TABLE_NAME}"))
    assert [p.kind.value for p in verify_audit(engine)] == ["delete_accepted"]


def test_chain_columns_are_frozen(engine: Engine) -> None:
    """PostgreSQL refuses an UPDATE that changes row_hash or prev_hash."""
    AuditRepository(engine).record_cycle([make_report()])
    for column in ("row_hash", "prev_hash"):
        with pytest.raises(IntegrityError, match="append-only"), engine.begin() as conn:
            conn.execute(text(f"UPDATE {AUDIT_TABLE_NAME} SET {column} = 'x'"))


def test_migration_chains_existing_rows_and_downgrades(schema_url: str) -> None:
    """Rows written at 0001 are chained by 0002; downgrade to 0001 drops the columns with the
    facts still frozen; upgrading again re-chains them."""
    engine = create_audit_engine(schema_url)
    try:
        upgrade(engine, "0001")
        with engine.begin() as conn:
            for n in range(2):
                for account in ("cb-main", "kr-main"):
                    conn.execute(
                        text(
                            f"INSERT INTO {AUDIT_TABLE_NAME} (reconciliation_id, cycle_id,"
                            " account_id, exchange_id, reconciliation_timestamp, status,"
                            " discrepancy_count, local_balances_json, exchange_balances_json,"
                            " discrepancies_json) VALUES (:r, :c, :a, 'coinbase', :t,"
                            " 'WARNING', 1, '{}', '{}', '[]')"
                        ),
                        {
                            "r": f"c{n}:{account}",
                            "c": f"c{n}",
                            "a": account,
                            "t": T0 + timedelta(minutes=n, microseconds=7),
                        },
                    )
        upgrade(engine)
        assert len(assert_linear_chains(engine)) == 2
        assert verify_audit(engine) == []

        downgrade(engine, "0001")
        columns = {c["name"] for c in inspect(engine).get_columns(AUDIT_TABLE_NAME)}
        assert not {"row_hash", "prev_hash"} & columns
        with pytest.raises(IntegrityError, match="append-only"), engine.begin() as conn:
            conn.execute(text(f"UPDATE {AUDIT_TABLE_NAME} SET status = 'ERROR'"))

        upgrade(engine)
        assert verify_audit(engine) == []
        downgrade(engine)
        assert not inspect(engine).has_table(AUDIT_TABLE_NAME)
    finally:
        engine.dispose()


def test_operator_log_accepting_changes_is_reported(engine: Engine) -> None:
    """The operator actions log is probed too (empty here: a rolled-back probe row): with its
    triggers dropped, verify reports the UPDATE and the DELETE it accepted, naming the table."""
    assert verify_audit(engine) == []
    with engine.begin() as conn:
        for trigger in ("operator_actions_refuse_update", "operator_actions_refuse_delete"):
            conn.execute(text(f"DROP TRIGGER {trigger} ON operator_actions"))
    problems = verify_audit(engine)
    assert [p.kind.value for p in problems] == ["update_accepted", "delete_accepted"]
    assert all("operator_actions" in p.message for p in problems)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM operator_actions")).scalar() == 0
