"""workers.memory: the joins give freed memory back (malloc_trim), nothing else does."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from celery import signals

from workers import memory


def test_release_works_on_this_c_library() -> None:
    """On glibc (Linux) malloc_trim exists and runs; elsewhere the release is a no-op."""
    released = memory.release_freed_memory()
    assert released is (sys.platform == "linux" and memory._malloc_trim() is not None)


class _Task:
    def __init__(self, name: str) -> None:
        self.name = name


def test_only_the_joins_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(memory, "_malloc_trim", lambda: calls.append)
    for name in (
        "recon.fetch_venue",
        "recon.tick",
        "recon.compare_and_report",
        "recon.confirm_breaks",
    ):
        sender: Any = _Task(name)
        signals.task_postrun.send(sender=sender, task_id="t", task=sender)
    assert calls == [0, 0]
