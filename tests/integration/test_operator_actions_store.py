"""The ``operator_actions`` table (migration 0003) and its log on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from infra.db import create_audit_engine, downgrade, upgrade
from infra.db.operator_actions import OperatorActionLog

T0 = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: Callable[[], str]
) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'audit.db'}" if request.param == "sqlite" else postgres_url()
    engine = create_audit_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _record(log: OperatorActionLog, outcome: str = "synced") -> int:
    return log.record(
        operator="alice",
        action="sync",
        account_id="acct-1",
        reason="book drifted",
        outcome=outcome,
        at=T0,
        detail={"assets": 2},
    )


def test_record_and_history_newest_first(engine: Engine) -> None:
    """Recorded actions come back newest first with every field and their detail."""
    log = OperatorActionLog(engine)
    first = _record(log, "refused")
    second = _record(log, "synced")
    history = log.history(10)
    assert [a.id for a in history] == [second, first]
    assert history[0].outcome == "synced"
    assert history[1].outcome == "refused"
    assert history[0].operator == "alice"
    assert history[0].account_id == "acct-1"
    assert history[0].reason == "book drifted"
    assert history[0].at == T0
    assert history[0].detail == {"assets": 2}
    assert len(log.history(1)) == 1


@pytest.mark.parametrize(
    "statement",
    ["UPDATE operator_actions SET outcome = 'synced'", "DELETE FROM operator_actions"],
)
def test_update_and_delete_are_refused(engine: Engine, statement: str) -> None:
    """The database refuses UPDATE and DELETE on operator_actions; the row stays as recorded."""
    log = OperatorActionLog(engine)
    _record(log, "refused")
    with (
        pytest.raises(IntegrityError, match="operator_actions is append-only"),
        engine.begin() as connection,
    ):
        connection.execute(text(statement))
    assert [a.outcome for a in log.history(10)] == ["refused"]


@pytest.mark.postgres
def test_truncate_is_refused_on_postgres(postgres_url: Callable[[], str]) -> None:
    """PostgreSQL refuses TRUNCATE of operator_actions too."""
    engine = create_audit_engine(postgres_url())
    try:
        upgrade(engine)
        _record(OperatorActionLog(engine))
        with (
            pytest.raises(IntegrityError, match="operator_actions is append-only"),
            engine.begin() as connection,
        ):
            connection.execute(text("TRUNCATE operator_actions"))
        assert len(OperatorActionLog(engine).history(5)) == 1
    finally:
        engine.dispose()


def test_downgrade_to_0002_drops_the_table(tmp_path: Path) -> None:
    """Downgrading below 0003 removes the table and its triggers; upgrading restores them."""
    engine = create_audit_engine(f"sqlite:///{tmp_path / 'a.db'}")
    try:
        upgrade(engine)
        downgrade(engine, "0002")
        with engine.connect() as connection:
            names = connection.execute(
                text("SELECT name FROM sqlite_master WHERE name LIKE 'operator_actions%'")
            ).all()
        assert names == []
        upgrade(engine)
        assert OperatorActionLog(engine).history(1) == []
    finally:
        engine.dispose()
