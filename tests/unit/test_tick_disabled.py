"""Beat's tick does nothing when RECONCILIATION_ENABLED is false."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers import runtime
from workers.tasks import tick


@pytest.fixture
def disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The built-in roster with reconciliation switched off, audit file in tmp_path."""
    for name in [n for n in os.environ if n.startswith("RECONCILIATION_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RECONCILIATION_ENABLED", "false")
    monkeypatch.setenv("RECONCILIATION_DATABASE_URL", f"sqlite:///{tmp_path / 'audit.db'}")
    runtime.close_runtime()
    yield
    runtime.close_runtime()


def test_tick_returns_disabled_without_taking_locks_or_fetching(disabled: None) -> None:
    """The task returns {"status": "disabled"}: no lock taken, no chord, no venue request."""
    result = tick.apply().get()
    assert result == {"status": "disabled"}
    locks = runtime.get_runtime().locks
    acquired = locks.acquire(["cb-main"], "probe", 1)
    assert acquired.held == ("cb-main",)  # nothing else holds the account
    locks.release(["cb-main"], "probe")
