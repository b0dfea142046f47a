"""The tamper-evident audit chain on SQLite: hashing, chained writes, verification, migration.

The scenario functions (``check_*``) take an engine and are shared with the PostgreSQL tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, func, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from infra.db import AuditRepository, create_audit_engine, downgrade, ensure_schema, upgrade
from infra.db.chain import HASHED_COLUMNS, PreparedRow, canonical_facts, row_hash
from infra.db.models import AUDIT_TABLE
from infra.db.verify import Problem, ProblemKind, verify_audit
from tests.unit.test_audit_repository_sqlite import T0, make_report, run_together

AUDIT_TABLE_NAME = "reconciliation_audit"


def chain_rows(engine: Engine) -> list[dict[str, Any]]:
    """Every audit row as a dict, in id order."""
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(AUDIT_TABLE).order_by("id"))]


def assert_linear_chains(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Each account's rows form one chain: first prev_hash NULL, each link the previous hash."""
    by_account: dict[str, list[dict[str, Any]]] = {}
    for row in chain_rows(engine):
        by_account.setdefault(row["account_id"], []).append(row)
    for rows in by_account.values():
        previous: str | None = None
        for row in rows:
            assert row["prev_hash"] == previous
            assert row["row_hash"] == row_hash(row, previous)
            previous = row["row_hash"]
    return by_account


def count_rows(engine: Engine) -> int:
    """How many audit rows there are."""
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {AUDIT_TABLE_NAME}")).scalar_one())


def check_chain_across_cycles_and_accounts(engine: Engine) -> None:
    """Rows are chained per account across cycles, and verification finds nothing."""
    repo = AuditRepository(engine)
    for n in range(3):
        cycle = f"c{n}"
        assert (
            repo.record_cycle(
                [
                    make_report(cycle_id=cycle, account_id=account, at=T0 + timedelta(minutes=n))
                    for account in ("cb-main", "kr-main")
                ]
            )
            == 2
        )
    chains = assert_linear_chains(engine)
    assert {account: len(rows) for account, rows in chains.items()} == {
        "cb-main": 3,
        "kr-main": 3,
    }
    assert verify_audit(engine) == []


def check_idempotent_rewrite_keeps_the_chain(engine: Engine) -> None:
    """Re-recording a cycle adds nothing and does not advance a head: new rows chain to the
    real latest row, and a report repeated within one batch is chained once."""
    repo = AuditRepository(engine)
    first = make_report(cycle_id="c1")
    second = make_report(cycle_id="c2", at=T0 + timedelta(minutes=1))
    assert repo.record_cycle([first]) == 1
    assert repo.record_cycle([second]) == 1
    assert repo.record_cycle([first]) == 0
    third = make_report(cycle_id="c3", at=T0 + timedelta(minutes=2))
    assert repo.record_cycle([first, third, second, third]) == 1
    rows = assert_linear_chains(engine)["cb-main"]
    assert [r["cycle_id"] for r in rows] == ["c1", "c2", "c3"]
    assert rows[2]["prev_hash"] == rows[1]["row_hash"]
    assert verify_audit(engine) == []


def check_concurrent_writers_build_one_chain(engine: Engine, rounds: int = 8) -> None:
    """Two writers appending cycles of one account at once leave one linear chain, no fork."""
    repo = AuditRepository(engine)

    def writer(name: str) -> Callable[[], int]:
        def write() -> int:
            return sum(
                repo.record_cycle(
                    [make_report(cycle_id=f"{name}-{n}", at=T0 + timedelta(seconds=n))]
                )
                for n in range(rounds)
            )

        return write

    assert run_together(writer("a"), writer("b")) == [rounds, rounds]
    rows = assert_linear_chains(engine)["cb-main"]
    assert len(rows) == 2 * rounds
    assert len({r["prev_hash"] for r in rows}) == len(rows)
    assert verify_audit(engine) == []


def check_tampered_fact_is_named(engine: Engine, disable_triggers: Callable[[], None]) -> None:
    """With the triggers gone, an UPDATE of a fact is named by id and reconciliation_id, and
    the database's acceptance of UPDATE and DELETE is reported; verify itself changes nothing."""
    repo = AuditRepository(engine)
    for n in range(3):
        repo.record_cycle([make_report(cycle_id=f"c{n}", at=T0 + timedelta(minutes=n))])
    victim = chain_rows(engine)[1]
    disable_triggers()
    with engine.begin() as conn:
        conn.execute(
            update_status(victim["id"], "SUCCESS" if victim["status"] != "SUCCESS" else "ERROR")
        )
    before = chain_rows(engine)

    problems = verify_audit(engine)

    assert problems[0] == Problem(
        ProblemKind.TAMPERED,
        "recorded facts do not match row_hash",
        victim["id"],
        victim["reconciliation_id"],
    )
    kinds = [p.kind for p in problems]
    assert kinds == [
        ProblemKind.TAMPERED,
        ProblemKind.UPDATE_ACCEPTED,
        ProblemKind.DELETE_ACCEPTED,
    ]
    assert chain_rows(engine) == before


def check_deleted_row_breaks_the_link(engine: Engine, disable_triggers: Callable[[], None]) -> None:
    """A DELETE in the middle of an account's chain is reported as a broken link on the row
    after it; other accounts' chains stay intact."""
    repo = AuditRepository(engine)
    for n in range(3):
        repo.record_cycle(
            [
                make_report(cycle_id=f"c{n}", account_id=a, at=T0 + timedelta(minutes=n))
                for a in ("cb-main", "kr-main")
            ]
        )
    rows = [r for r in chain_rows(engine) if r["account_id"] == "cb-main"]
    disable_triggers()
    with engine.begin() as conn:
        conn.execute(delete_row(rows[1]["id"]))

    problems = verify_audit(engine)

    chain = [p for p in problems if p.kind in (ProblemKind.TAMPERED, ProblemKind.BROKEN_LINK)]
    assert chain == [
        Problem(
            ProblemKind.BROKEN_LINK,
            "prev_hash does not match the row_hash of the account's previous row",
            rows[2]["id"],
            rows[2]["reconciliation_id"],
        )
    ]
    assert ProblemKind.DELETE_ACCEPTED in [p.kind for p in problems]


def check_empty_table_is_probed(engine: Engine, disable_triggers: Callable[[], None]) -> None:
    """An empty table is probed with a row inserted and rolled back: intact while the triggers
    stand, both acceptances reported once they are gone, and the table stays empty."""
    assert verify_audit(engine) == []
    disable_triggers()
    assert [p.kind for p in verify_audit(engine)] == [
        ProblemKind.UPDATE_ACCEPTED,
        ProblemKind.DELETE_ACCEPTED,
    ]
    assert count_rows(engine) == 0


def update_status(row_id: int, status: str) -> Any:
    """``UPDATE … SET status`` of one row."""
    return update(AUDIT_TABLE).where(AUDIT_TABLE.c.id == row_id).values(status=status)


def delete_row(row_id: int) -> Any:
    """``DELETE`` of one row."""
    return delete(AUDIT_TABLE).where(AUDIT_TABLE.c.id == row_id)


# --- SQLite ----------------------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Any) -> Iterator[Engine]:
    engine = create_audit_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    ensure_schema(engine)
    yield engine
    engine.dispose()


def sqlite_trigger_dropper(engine: Engine) -> Callable[[], None]:
    """Drops SQLite's append-only triggers, as the file's owner could."""

    def drop() -> None:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER reconciliation_audit_refuse_update"))
            conn.execute(text("DROP TRIGGER reconciliation_audit_refuse_delete"))

    return drop


FACTS: dict[str, object] = {
    "reconciliation_id": "c1:cb-main",
    "cycle_id": "c1",
    "account_id": "cb-main",
    "exchange_id": "coinbase",
    "reconciliation_timestamp": T0,
    "status": "WARNING",
    "discrepancy_count": 1,
    "local_balances_json": '{"BTC":"1.25"}',
    "exchange_balances_json": '{"BTC":"1.27"}',
    "discrepancies_json": "[]",
    "error_json": None,
}


def test_row_hash_is_sha256_of_canonical_json() -> None:
    """The hash is the SHA-256 hex of sorted, compact JSON with a microsecond UTC Z timestamp."""
    document = canonical_facts(FACTS, None).decode()
    assert document.startswith('{"account_id":"cb-main","cycle_id":"c1",')
    assert '"reconciliation_timestamp":"2026-11-24T00:00:01.000000Z"' in document
    assert '"prev_hash":null' in document
    digest = row_hash(FACTS, None)
    assert len(digest) == 64
    assert int(digest, 16) >= 0


def test_row_hash_covers_every_fact_and_the_link() -> None:
    """Changing any hashed fact or prev_hash changes the hash; "" and None are the same start;
    the same instant in another zone hashes the same; extra columns are ignored."""
    base = row_hash(FACTS, None)
    assert row_hash(FACTS, "") == base
    assert row_hash({**FACTS, "id": 7, "row_hash": "x"}, None) == base
    assert row_hash(FACTS, "ab" * 32) != base
    shifted = T0.astimezone(timezone(timedelta(hours=2)))
    assert row_hash({**FACTS, "reconciliation_timestamp": shifted}, None) == base
    changed = {
        "reconciliation_timestamp": T0 + timedelta(microseconds=1),
        "discrepancy_count": 2,
        "error_json": "{}",
    }
    for name in HASHED_COLUMNS:
        value = changed.get(name, f"{FACTS[name]}x")
        assert row_hash({**FACTS, name: value}, None) != base, name


@given(
    facts=st.fixed_dictionaries(
        {
            name: st.text(max_size=40)
            for name in HASHED_COLUMNS
            if name not in {"reconciliation_timestamp", "discrepancy_count"}
        }
    ),
    count=st.integers(min_value=0, max_value=10**6),
    prev=st.one_of(st.none(), st.just(""), st.text(max_size=70)),
)
def test_prepared_row_hashes_exactly_as_row_hash(
    facts: dict[str, object], count: int, prev: str | None
) -> None:
    """The writer's prepared bytes (encoded before the chain lock) give the very hash
    ``row_hash`` gives, whatever the facts hold (quotes, the sentinel's own text, non-ASCII)
    and whatever the previous hash is."""
    row = {**facts, "reconciliation_timestamp": T0, "discrepancy_count": count}
    assert PreparedRow(row).hash_with(prev) == row_hash(row, prev)
    sneaky = {**row, "error_json": '"prev_hash":"prev-hash-not-known-yet"'}
    assert PreparedRow(sneaky).hash_with(prev) == row_hash(sneaky, prev)


def test_row_hash_refuses_naive_timestamps_and_non_integer_counts() -> None:
    """A naive timestamp or a non-integer count cannot be hashed ambiguously."""
    with pytest.raises(TypeError, match="timezone-aware"):
        row_hash({**FACTS, "reconciliation_timestamp": datetime(2026, 1, 1)}, None)
    with pytest.raises(TypeError, match="integer"):
        row_hash({**FACTS, "discrepancy_count": True}, None)


def test_chain_across_cycles_and_accounts(engine: Engine) -> None:
    """Rows are chained per account across cycles, and verification finds nothing."""
    check_chain_across_cycles_and_accounts(engine)


def test_idempotent_rewrite_keeps_the_chain(engine: Engine) -> None:
    """Re-recording reports adds nothing and never advances an account's head."""
    check_idempotent_rewrite_keeps_the_chain(engine)


def test_concurrent_writers_build_one_chain(engine: Engine) -> None:
    """Two threads appending to one account at once leave one linear chain."""
    check_concurrent_writers_build_one_chain(engine)


def test_tampered_fact_is_named(engine: Engine) -> None:
    """A fact updated behind dropped triggers is named by id and reconciliation_id."""
    check_tampered_fact_is_named(engine, sqlite_trigger_dropper(engine))


def test_deleted_row_breaks_the_link(engine: Engine) -> None:
    """A row deleted behind dropped triggers shows as a broken link on the next row."""
    check_deleted_row_breaks_the_link(engine, sqlite_trigger_dropper(engine))


def test_empty_table_is_probed(engine: Engine) -> None:
    """verify probes an empty table's refusal with a rolled-back row."""
    check_empty_table_is_probed(engine, sqlite_trigger_dropper(engine))


def test_rehashed_row_breaks_the_next_link(engine: Engine) -> None:
    """A tamperer who also recomputes the row's own hash is caught by the next row's link."""
    repo = AuditRepository(engine)
    for n in range(3):
        repo.record_cycle([make_report(cycle_id=f"c{n}", at=T0 + timedelta(minutes=n))])
    victim, after = chain_rows(engine)[1:3]
    sqlite_trigger_dropper(engine)()
    forged = {**victim, "status": "SUCCESS"}
    with engine.begin() as conn:
        conn.execute(update_status(victim["id"], "SUCCESS"))
        conn.execute(
            text(f"UPDATE {AUDIT_TABLE_NAME} SET row_hash = :h WHERE id = :id"),
            {"h": row_hash(forged, victim["prev_hash"]), "id": victim["id"]},
        )
    chain = [
        p
        for p in verify_audit(engine)
        if p.row_id is not None and p.kind in (ProblemKind.TAMPERED, ProblemKind.BROKEN_LINK)
    ]
    assert [(p.kind, p.row_id) for p in chain] == [(ProblemKind.BROKEN_LINK, after["id"])]


def test_row_without_hash_is_reported(engine: Engine) -> None:
    """A row that carries no row_hash (written around the repository) is reported as such."""
    facts = {**FACTS, "reconciliation_timestamp": T0}
    with engine.begin() as conn:
        conn.execute(insert(AUDIT_TABLE).values(facts))
    problems = verify_audit(engine)
    assert [(p.kind, p.message, p.reconciliation_id) for p in problems] == [
        (ProblemKind.TAMPERED, "row has no row_hash", "c1:cb-main")
    ]


def test_chain_columns_are_frozen(engine: Engine) -> None:
    """The database refuses an UPDATE of row_hash or prev_hash like any other fact."""
    AuditRepository(engine).record_cycle([make_report()])
    for column in ("row_hash", "prev_hash"):
        with pytest.raises(IntegrityError, match="append-only"), engine.begin() as conn:
            conn.execute(text(f"UPDATE {AUDIT_TABLE_NAME} SET {column} = 'x'"))


def test_migration_chains_existing_rows_and_downgrades(tmp_path: Any) -> None:
    """Rows written at revision 0001 are chained by 0002; downgrading to 0001 drops the columns
    and keeps the facts frozen; upgrading again re-chains them."""
    engine = create_audit_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        upgrade(engine, "0001")
        reports = [
            make_report(cycle_id=f"c{n}", account_id=a, at=T0 + timedelta(minutes=n))
            for n in range(2)
            for a in ("cb-main", "kr-main")
        ]
        with engine.begin() as conn:
            for report in reports:
                conn.execute(
                    text(
                        f"INSERT INTO {AUDIT_TABLE_NAME} (reconciliation_id, cycle_id, account_id,"
                        " exchange_id, reconciliation_timestamp, status, discrepancy_count,"
                        " local_balances_json, exchange_balances_json, discrepancies_json)"
                        " VALUES (:r, :c, :a, 'coinbase', :t, 'WARNING', 1, '{}', '{}', '[]')"
                    ),
                    {
                        "r": report.reconciliation_id,
                        "c": report.cycle_id,
                        "a": report.account_id,
                        "t": report.reconciled_at.astimezone(UTC).replace(tzinfo=None),
                    },
                )
        upgrade(engine)
        assert_linear_chains(engine)
        assert verify_audit(engine) == []

        downgrade(engine, "0001")
        columns = {c["name"] for c in inspect(engine).get_columns(AUDIT_TABLE_NAME)}
        assert not {"row_hash", "prev_hash"} & columns
        with pytest.raises(IntegrityError, match="append-only"), engine.begin() as conn:
            conn.execute(text(f"UPDATE {AUDIT_TABLE_NAME} SET status = 'ERROR'"))

        upgrade(engine)
        assert verify_audit(engine) == []
        with engine.connect() as conn:
            assert (
                conn.execute(select(func.count()).select_from(text(AUDIT_TABLE_NAME))).scalar() == 4
            )
    finally:
        engine.dispose()


def test_problem_text_names_the_row() -> None:
    """A problem's text names the row by id and reconciliation_id, and its kind."""
    problem = Problem(ProblemKind.BROKEN_LINK, "prev_hash does not match", 12, "c1:cb-main")
    assert str(problem) == "row 12 (c1:cb-main): broken_link: prev_hash does not match"
    assert str(dataclasses.replace(problem, row_id=None)) == "broken_link: prev_hash does not match"


def test_operator_log_accepting_changes_is_reported_on_sqlite(engine: Engine) -> None:
    """SQLite: with the operator actions log's triggers dropped, verify names the UPDATE and the
    DELETE that log accepted (on a rolled-back probe row: the log stays empty)."""
    assert verify_audit(engine) == []
    with engine.begin() as conn:
        for trigger in ("operator_actions_refuse_update", "operator_actions_refuse_delete"):
            conn.execute(text(f"DROP TRIGGER {trigger}"))
    problems = verify_audit(engine)
    assert [p.kind for p in problems] == [ProblemKind.UPDATE_ACCEPTED, ProblemKind.DELETE_ACCEPTED]
    assert all("operator_actions" in p.message for p in problems)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM operator_actions")).scalar() == 0
