"""The production shape by hand: two workers, one beat and Flower on real Redis and Postgres.

The same processes ``docker-compose.yml`` runs (``celery -A workers worker | beat | flower``),
here as plain processes of the test: beat ticks every 2 s, a cycle lands in the audit table
without anyone enqueueing anything, Flower's API shows the recon tasks by name with readable
arguments, and every process stops with exit status 0 on SIGTERM (Celery's warm shutdown).
"""

from __future__ import annotations

import json
import re
import signal
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pytest

from tests.integration.workers_harness import (  # noqa: F401  (fixtures)
    READY_TIMEOUT,
    STOP_TIMEOUT,
    CeleryProcess,
    CeleryStack,
    audit_database_fixture,
    audit_rows,
    free_port,
    http_get,
    process_environment,
    redis_database_fixture,
    redis_url_fixture,
    wait_for,
)
from tests.support import (
    Desk,
    coin,
    coinbase_venue,
    desk_fixture,  # noqa: F401  (the ``desk`` fixture)
    dydx_venue,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

ACCOUNTS: Final = ("cb-main", "dx-0", "dx-1")
#: Distinctive amounts: none of them may show in what Flower displays as task arguments.
BOOK: Final = {
    "cb-main": {"BTC": "3.14159"},
    "dx-0": {"USDC": "2718.28"},
    "dx-1": {"USDC": "1414.21"},
}
AMOUNTS: Final = ("3.14159", "2718.28", "1414.21")
RECON_TASKS: Final = ("recon.tick", "recon.fetch_venue", "recon.compare_and_report")


def complete_cycle(database_url: str) -> str | None:
    """The id of a cycle with a row for every account, if one has landed."""
    accounts_by_cycle: dict[str, set[str]] = {}
    for row in audit_rows(database_url):
        accounts_by_cycle.setdefault(row["cycle_id"], set()).add(row["account_id"])
    done = [cycle for cycle, accounts in accounts_by_cycle.items() if accounts == set(ACCOUNTS)]
    return done[0] if done else None


def flower_json(base: str, path: str) -> Any:
    status, body = http_get(base + path)
    assert status == 200, (path, status, body[:200])
    return json.loads(body)


def tasks_of_cycle(base: str, cycle_id: str) -> dict[str, Mapping[str, Any]] | None:
    """Flower's finished tasks of ``cycle_id`` (its join and its venue fetches), once it has
    seen them all succeed."""
    tasks: dict[str, Mapping[str, Any]] = flower_json(base, "/api/tasks")
    mine = {
        uuid: task
        for uuid, task in tasks.items()
        if uuid == cycle_id or cycle_id in (task.get("kwargs") or "")
    }
    names = Counter(task["name"] for task in mine.values())
    finished = all(task["state"] == "SUCCESS" for task in mine.values())
    complete = names["recon.compare_and_report"] == 1 and names["recon.fetch_venue"] == 2
    if complete and names["recon.tick"] == 1 and finished:
        return mine
    return None


def events_by_task(metrics: str) -> dict[str, set[str]]:
    """Flower's ``flower_events_total`` samples: event types seen per task name."""
    seen: dict[str, set[str]] = {}
    for line in metrics.splitlines():
        if line.startswith("flower_events_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            seen.setdefault(labels.get("task", ""), set()).add(labels.get("type", ""))
    return seen


def wait_for_flower(flower: CeleryProcess, base: str) -> None:
    def healthy() -> bool:
        if not flower.alive():
            pytest.fail(f"flower exited with {flower.returncode}:\n{flower.tail()}")
        return http_get(base + "/healthcheck", timeout=1)[0] == 200

    wait_for(healthy, timeout=READY_TIMEOUT, what="Flower's /healthcheck", interval=0.2)


def test_workers_beat_and_flower_by_hand_land_cycles_and_stop_on_sigterm(
    desk: Desk, tmp_path: Path, audit_database: str, redis_url: str
) -> None:
    """With two workers, beat every 2 s and Flower, a whole cycle reaches the audit table with
    no manual enqueue, Flower lists recon.tick, recon.fetch_venue and recon.compare_and_report
    with readable arguments (and no amount), and SIGTERM stops every process with status 0."""
    desk.start(
        coinbase_venue("cb-main", balances=[coin("BTC", "3.14159")]),
        dydx_venue(
            "dx-0", subaccount=0, assets=[{"symbol": "USDC", "side": "LONG", "size": "2718.28"}]
        ),
        dydx_venue(
            "dx-1", subaccount=1, assets=[{"symbol": "USDC", "side": "LONG", "size": "1414.21"}]
        ),
        book=BOOK,
    )
    env = process_environment(
        desk,
        database_url=audit_database,
        redis_url=redis_url,
        RECONCILIATION_INTERVAL_SECONDS="2",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with CeleryStack(tmp_path, env, redis_url) as stack:
        workers = [stack.start_worker("w1"), stack.start_worker("w2")]
        beat = stack.start_beat()
        flower = stack.start_flower(port)
        for process in (*workers, beat):
            stack.wait_ready(process)
        wait_for_flower(flower, base)

        cycle_id = wait_for(
            lambda: complete_cycle(audit_database), timeout=30, what="a cycle in the audit table"
        )
        tasks = wait_for(
            lambda: tasks_of_cycle(base, cycle_id), timeout=20, what="the cycle's tasks in Flower"
        )
        events = wait_for(
            lambda: events_by_task(http_get(base + "/metrics")[1].decode()).get("recon.tick"),
            timeout=20,
            what="recon.tick events in Flower's metrics",
        )
        seen = events_by_task(http_get(base + "/metrics")[1].decode())

        processes = [*workers, beat, flower]
        for process in processes:
            process.popen.send_signal(signal.SIGTERM)
        exit_codes = {p.name: p.popen.wait(timeout=STOP_TIMEOUT) for p in processes}
        logs = {p.name: p.log() for p in processes}

    assert exit_codes == {"w1": 0, "w2": 0, "beat": 0, "flower": 0}, {
        name: logs[name][-2000:] for name, code in exit_codes.items() if code != 0
    }
    assert "Warm shutdown" in logs["w1"]
    assert "Warm shutdown" in logs["w2"]
    assert "Sending due task recon-tick (recon.tick)" in logs["beat"]

    rows = [row for row in audit_rows(audit_database) if row["cycle_id"] == cycle_id]
    assert sorted(row["account_id"] for row in rows) == sorted(ACCOUNTS)
    assert all(row["status"] == "SUCCESS" for row in rows)

    assert tasks[cycle_id]["name"] == "recon.tick"  # the tick's id is the cycle's id
    (join,) = [t for t in tasks.values() if t["name"] == "recon.compare_and_report"]
    assert f"'cycle_id': '{cycle_id}'" in join["kwargs"]
    assert "'shape': 'cycle'" in join["kwargs"]
    fetches = [task for task in tasks.values() if task["name"] == "recon.fetch_venue"]
    assert sorted(f["kwargs"] for f in fetches) == sorted(
        f"{{'cycle_id': '{cycle_id}', 'account_ids': {ids!r}}}"
        for ids in (["cb-main"], ["dx-0", "dx-1"])
    )
    assert {t["worker"] for t in tasks.values()} <= {stack.node_name("w1"), stack.node_name("w2")}
    for task in tasks.values():
        shown = f"{task['args']} {task['kwargs']} {task.get('result')}"
        assert not any(amount in shown for amount in AMOUNTS), task["name"]

    assert "task-received" in events
    assert {name for name in RECON_TASKS if name in seen} == set(RECON_TASKS)
