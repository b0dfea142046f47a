"""``recon audit verify`` in process: exit 0 when the audit is intact, 7 naming the first bad
row when it is not, 6 when the store cannot be checked; no amount in its output."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import Engine, text

from cli.exit_codes import ExitCode
from infra.db import AuditRepository, create_audit_engine, ensure_schema, upgrade
from tests.support import run_recon
from tests.unit.test_audit_chain import AUDIT_TABLE_NAME, chain_rows
from tests.unit.test_audit_repository_sqlite import T0, make_report


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``RECONCILIATION_*`` variable of the caller's environment leaks into a run."""
    for name in list(os.environ):
        if name.startswith("RECONCILIATION_"):
            monkeypatch.delenv(name)


def verify(url: str) -> Result:
    """``recon audit verify`` against the audit store at ``url``."""
    return run_recon(["audit", "verify"], {"RECONCILIATION_DATABASE_URL": url})


def fill(engine: Engine) -> list[dict[str, object]]:
    """Three cycles of two accounts recorded through the repository; the rows, in id order."""
    repo = AuditRepository(engine)
    for n in range(3):
        repo.record_cycle(
            [
                make_report(cycle_id=f"c{n}", account_id=a, at=T0 + timedelta(minutes=n))
                for a in ("cb-main", "kr-main")
            ]
        )
    return chain_rows(engine)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """A migrated SQLite audit file holding three cycles of two accounts."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    engine = create_audit_engine(url)
    ensure_schema(engine)
    fill(engine)
    yield url, engine
    engine.dispose()


def assert_no_amounts(result: Result) -> None:
    """None of the test reports' balances appears in the command's output."""
    for amount in ("1.25", "1.27", "0.1000000000000000001"):
        assert amount not in result.stdout
        assert amount not in result.stderr


def test_intact_audit_exits_zero(sqlite_store: tuple[str, Engine]) -> None:
    """An untouched audit store verifies clean: exit 0, no problem printed."""
    url, _ = sqlite_store
    result = verify(url)
    assert result.exit_code == ExitCode.OK
    assert result.stdout == ""
    assert "audit intact" in result.stderr


def test_empty_store_exits_zero(tmp_path: Path) -> None:
    """A new, empty SQLite store is migrated, probed with a rolled-back row, and intact."""
    result = verify(f"sqlite:///{tmp_path / 'new.db'}")
    assert result.exit_code == ExitCode.OK


def test_tampered_row_exits_seven_naming_it(sqlite_store: tuple[str, Engine]) -> None:
    """A fact changed behind dropped triggers: exit 7, the row named by id and
    reconciliation_id first, the accepted UPDATE and DELETE listed, no amount printed."""
    url, engine = sqlite_store
    victim = chain_rows(engine)[2]
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER reconciliation_audit_refuse_update"))
        conn.execute(text("DROP TRIGGER reconciliation_audit_refuse_delete"))
        conn.execute(
            text(f"UPDATE {AUDIT_TABLE_NAME} SET status = 'SUCCESS' WHERE id = :id"),
            {"id": victim["id"]},
        )
    result = verify(url)
    assert result.exit_code == ExitCode.AUDIT_TAMPERED
    assert int(ExitCode.AUDIT_TAMPERED) == 7
    named = f"row {victim['id']} ({victim['reconciliation_id']}): tampered"
    lines = result.stdout.splitlines()
    assert lines[0].startswith(named)
    assert [line.split(": ")[1] for line in lines[1:]] == ["update_accepted", "delete_accepted"]
    assert f"first: {named}" in result.stderr
    assert_no_amounts(result)


def test_deleted_row_exits_seven_naming_the_broken_link(
    sqlite_store: tuple[str, Engine],
) -> None:
    """A row deleted from the middle of a chain: exit 7 naming the next row's broken link."""
    url, engine = sqlite_store
    rows = [r for r in chain_rows(engine) if r["account_id"] == "kr-main"]
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER reconciliation_audit_refuse_delete"))
        conn.execute(text(f"DELETE FROM {AUDIT_TABLE_NAME} WHERE id = :id"), {"id": rows[0]["id"]})
    result = verify(url)
    assert result.exit_code == ExitCode.AUDIT_TAMPERED
    named = f"row {rows[1]['id']} ({rows[1]['reconciliation_id']}): broken_link"
    assert result.stdout.splitlines()[0].startswith(named)
    assert f"first: {named}" in result.stderr
    assert_no_amounts(result)


@pytest.mark.postgres
def test_postgres_exit_codes(postgres_url: Callable[[], str]) -> None:
    """On PostgreSQL: 6 while the schema is not migrated, 0 when intact, 7 naming the row
    once a fact is changed behind disabled triggers."""
    url = postgres_url()
    assert verify(url).exit_code == ExitCode.AUDIT_STORE
    engine = create_audit_engine(url)
    try:
        upgrade(engine)
        victim = fill(engine)[0]
        assert verify(url).exit_code == ExitCode.OK
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE {AUDIT_TABLE_NAME} DISABLE TRIGGER USER"))
            conn.execute(
                text(f"UPDATE {AUDIT_TABLE_NAME} SET discrepancy_count = 5 WHERE id = :id"),
                {"id": victim["id"]},
            )
    finally:
        engine.dispose()
    result = verify(url)
    assert result.exit_code == ExitCode.AUDIT_TAMPERED
    assert f"first: row {victim['id']} ({victim['reconciliation_id']}): tampered" in result.stderr
    assert_no_amounts(result)
