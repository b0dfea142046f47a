"""The ``recon.sync_balances`` task: its result is the outcome (refusals too); bad payloads fail."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import Desk, coin, coinbase_venue, desk_fixture  # noqa: F401
from workers import runtime as worker_runtime
from workers import tasks
from workers.payloads import InvalidTaskPayload

VENUE = coinbase_venue("cb-main", balances=[coin("BTC", "1.5")])


@pytest.fixture
def runtime(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> Iterator[worker_runtime.WorkerRuntime]:
    """A worker runtime over a desk with a file book (not writable) and alice's token."""
    desk.start(VENUE, book={"cb-main": {"BTC": "1"}})
    for name, value in desk.env(RECONCILIATION_OPERATOR_TOKENS="alice=tok-alice").items():
        monkeypatch.setenv(name, value)
    built = worker_runtime.build_worker_runtime()
    monkeypatch.setattr(tasks, "get_runtime", lambda: built)
    try:
        yield built
    finally:
        built.close()


def _run(**kwargs: Any) -> Any:
    return tasks.sync_balances.apply(kwargs=kwargs).get()


def test_refusal_is_a_normal_result(runtime: worker_runtime.WorkerRuntime) -> None:
    """A wrong token gives the refused outcome as the task's result, not a task failure."""
    outcome = _run(account_id="cb-main", operator="alice", token="nope", reason="drift")
    assert outcome == {"outcome": "refused", "reason": "not authorised"}
    outcome = _run(account_id="cb-main", operator="alice", token="tok-alice", reason="drift")
    assert outcome == {"outcome": "refused", "reason": "book not writable"}


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"account_id": "nope", "operator": "alice", "token": "t", "reason": "r"}, "account_id"),
        ({"account_id": "cb-main", "operator": "alice", "token": 7, "reason": "r"}, "token"),
        ({"account_id": "cb-main", "operator": "", "token": "t", "reason": "r"}, "operator"),
        ({"account_id": "cb-main", "operator": "alice", "token": "t"}, "reason"),
    ],
)
def test_bad_payload_names_the_argument(
    runtime: worker_runtime.WorkerRuntime, kwargs: dict[str, Any], named: str
) -> None:
    """A bad payload fails the task with a message naming the argument, never the token."""
    with pytest.raises(InvalidTaskPayload, match=f"'{named}'") as caught:
        _run(**kwargs)
    assert "tok-alice" not in str(caught.value)
