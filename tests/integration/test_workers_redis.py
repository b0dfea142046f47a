"""recon's Celery workers as real processes on the machine's Redis and PostgreSQL.

Each test serves a sandbox venue (in this process, on loopback) holding two Coinbase accounts
and three dYdX subaccounts, writes the roster and a matching book, migrates a throwaway
PostgreSQL database, and starts ``celery -A workers worker`` processes against a Redis database
of its own. Results are checked on the tasks' AsyncResults and on the audit table itself.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import pytest
from celery.result import AsyncResult

from bench.harness import RedisDatabase
from infra.sandbox import SandboxServer
from tests.integration.workers_harness import (  # noqa: F401  (fixtures)
    RESULT_TIMEOUT,
    CeleryStack,
    audit_database_fixture,
    audit_rows,
    process_environment,
    recovery_columns,
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
    fault,
    reports_by_account,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

COINBASE: Final = ("cb-desk2", "cb-main")
DYDX: Final = ("dx-0", "dx-1", "dx-2")
ACCOUNTS: Final = sorted((*COINBASE, *DYDX))
#: What the book says each account holds; the venue holds the same (every report SUCCESS).
BOOK: Final[Mapping[str, Mapping[str, str]]] = {
    "cb-main": {"BTC": "1.5"},
    "cb-desk2": {"ETH": "12.25"},
    "dx-0": {"USDC": "1000"},
    "dx-1": {"USDC": "1001"},
    "dx-2": {"USDC": "1002"},
}
#: The keys of a cycle's JSON (DESIGN §5), plus the accounts it skipped as busy.
CYCLE_KEYS: Final = {"cycle_id", "started_at", "finished_at", "status", "reports", "skipped"}


def venues(
    *,
    latency_ms: Mapping[str, int] | None = None,
    faults: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """The sandbox accounts matching :data:`BOOK`, with per-account latency and faults."""
    latency_ms = latency_ms or {}
    faults = faults or {}
    accounts = [
        coinbase_venue(
            "cb-main",
            key="cb-main",
            balances=[coin("BTC", "1.5")],
            faults=faults.get("cb-main", ()),
        ),
        coinbase_venue(
            "cb-desk2",
            key="cb-desk2",
            balances=[coin("ETH", "12.25")],
            faults=faults.get("cb-desk2", ()),
        ),
        *(
            dydx_venue(
                f"dx-{n}",
                subaccount=n,
                assets=[{"symbol": "USDC", "side": "LONG", "size": f"{1000 + n}"}],
                faults=faults.get(f"dx-{n}", ()),
            )
            for n in range(3)
        ),
    ]
    for account in accounts:
        if account["id"] in latency_ms:
            account["latency_ms"] = latency_ms[account["id"]]
    return accounts


def start_desk(desk: Desk, **scenario: Any) -> SandboxServer:
    """Serve :func:`venues` and write the roster and book of this test."""
    return desk.start(*venues(**scenario), book=BOOK)


def stack_for(
    desk: Desk, tmp_path: Path, audit_database: str, redis_url: str, **env: str
) -> CeleryStack:
    """The test's processes, configured for its desk, database and Redis."""
    variables = process_environment(desk, database_url=audit_database, redis_url=redis_url, **env)
    return CeleryStack(tmp_path, variables, redis_url)


def result_of(result: AsyncResult[Any]) -> Any:
    """The task's result, waiting on the Redis result backend."""
    return result.get(timeout=RESULT_TIMEOUT, interval=0.05)


def assert_cycle_shape(cycle: Mapping[str, Any], cycle_id: str) -> None:
    assert set(cycle) == CYCLE_KEYS
    assert cycle["cycle_id"] == cycle_id
    assert cycle["started_at"] <= cycle["finished_at"]
    assert all(report["cycle_id"] == cycle_id for report in cycle["reports"])


def test_tick_reconciles_every_account_exactly_once(
    desk: Desk, tmp_path: Path, audit_database: str, redis_url: str
) -> None:
    """A recon.tick sent by name runs one cycle over two workers: one audit row per account
    with the cycle's id, each venue account fetched once; the tick names the cycle it started
    and its join's result is the cycle JSON."""
    server = start_desk(desk)
    with stack_for(desk, tmp_path, audit_database, redis_url) as stack:
        stack.workers("w1", "w2")
        result = stack.client.send_task("recon.tick")
        started = result_of(result)
        cycle = result_of(stack.client.AsyncResult(started["join_id"]))

    assert started["status"] == "started"
    assert started["cycle_id"] == result.id
    assert started["accounts"] == ACCOUNTS
    assert_cycle_shape(cycle, result.id)
    assert cycle["status"] == "SUCCESS"
    assert cycle["skipped"] == []
    reports = reports_by_account(cycle["reports"])
    assert sorted(reports) == ACCOUNTS
    assert all(r["status"] == "SUCCESS" and r["error"] is None for r in reports.values())
    assert {a: r["exchange_balances"] for a, r in reports.items()} == BOOK

    rows = audit_rows(audit_database)
    assert sorted(row["account_id"] for row in rows) == ACCOUNTS
    assert {row["cycle_id"] for row in rows} == {result.id}
    assert {row["account_id"]: row["reconciliation_id"] for row in rows} == {
        a: r["reconciliation_id"] for a, r in reports.items()
    }
    assert {a: server.request_count(a) for a in ACCOUNTS} == dict.fromkeys(ACCOUNTS, 1)


def test_a_venue_failing_every_retry_is_an_error_report_beside_the_others(
    desk: Desk, tmp_path: Path, audit_database: str, redis_url: str
) -> None:
    """An account whose venue answers 503 to every attempt ends as its ERROR report (kind
    unavailable) after retry_count + 1 requests, while every other account, its venue
    neighbour included, succeeds in the same cycle."""
    server = start_desk(desk, faults={"cb-desk2": [fault("status_5xx", "always", status=503)]})
    retries = 2
    with stack_for(
        desk, tmp_path, audit_database, redis_url, RECONCILIATION_RETRY_COUNT=str(retries)
    ) as stack:
        stack.workers("w1", "w2")
        result = stack.client.send_task("recon.reconcile_all")
        cycle = result_of(result)
        logs = "".join(p.log() for p in stack.processes.values())

    assert_cycle_shape(cycle, result.id)
    assert cycle["status"] == "ERROR"
    reports = reports_by_account(cycle["reports"])
    assert sorted(reports) == ACCOUNTS
    failed = reports["cb-desk2"]
    assert failed["status"] == "ERROR"
    assert failed["error"]["kind"] == "unavailable"
    assert failed["exchange_balances"] == {}  # nothing read from the venue: no zeros invented
    assert failed["discrepancies"] == []
    assert all(reports[a]["status"] == "SUCCESS" for a in ACCOUNTS if a != "cb-desk2")

    assert server.request_count("cb-desk2") == retries + 1
    # The healthy account of the same venue (same header task) is not fetched again.
    assert {a: server.request_count(a) for a in ACCOUNTS if a != "cb-desk2"} == {
        a: 1 for a in ACCOUNTS if a != "cb-desk2"
    }
    # Celery did the retrying: the header task was retried, one attempt per retry.
    for attempt in range(1, retries + 2):
        assert f"account=cb-desk2 attempt={attempt} kind=unavailable" in logs

    rows = {row["account_id"]: row for row in audit_rows(audit_database)}
    assert sorted(rows) == ACCOUNTS
    assert rows["cb-desk2"]["status"] == "ERROR"
    assert rows["cb-desk2"]["error_json"]["kind"] == "unavailable"
    assert all(rows[a]["status"] == "SUCCESS" for a in ACCOUNTS if a != "cb-desk2")
    assert {row["cycle_id"] for row in rows.values()} == {result.id}


@pytest.mark.parametrize(
    ("retry_count", "resets", "error_kind"),
    [
        # The chord's fetch (retry 1 of 3) gets the venue's answer.
        ("3", 1, None),
        # One retry allowed: the chord's fetch is that retry, fails too, and is the last.
        ("1", 2, "unavailable"),
    ],
    ids=["the-retry-succeeds", "the-retries-are-spent"],
)
def test_a_second_look_that_fails_in_the_join_is_retried_by_a_second_chord(
    desk: Desk,
    tmp_path: Path,
    audit_database: str,
    redis_url: str,
    retry_count: str,
    resets: int,
    error_kind: str | None,
) -> None:
    """With no confirm delay the join looks again itself, one attempt per flagged account;
    an attempt that fails transiently (a reset connection) is retried by a second chord,
    whose fetch counts as the first retry: three requests in all, the break confirmed, on the
    venue's answer or with the error that spent the retries, in the report and the row."""
    book = {**BOOK, "dx-1": {"USDC": "900"}}  # the venue holds 1001: an ERROR break
    rules = [fault("none", 1), fault("reset", resets)]
    server = desk.start(*venues(faults={"dx-1": rules}), book=book)
    with stack_for(
        desk, tmp_path, audit_database, redis_url, RECONCILIATION_RETRY_COUNT=retry_count
    ) as stack:
        (worker,) = stack.workers("w1")
        result = stack.client.send_task("recon.reconcile_all")
        cycle = result_of(result)
        logs = worker.log()

    reports = reports_by_account(cycle["reports"])
    broken = reports["dx-1"]
    assert broken["status"] == "ERROR"
    assert broken["recovery"]["status"] == "FAILED"
    assert (broken["recovery"].get("error") or {}).get("kind") == error_kind
    assert all(reports[a]["recovery"] is None for a in ACCOUNTS if a != "dx-1")
    assert server.request_count("dx-1") == 3  # first look, the join's attempt, the retry
    assert f"confirming re-fetch failed: cycle={result.id} account=dx-1 attempt=1" in logs
    assert ("account=dx-1 attempt=2 kind=unavailable" in logs) is (error_kind is not None)
    assert worker.count("Task recon.confirm_breaks[") == 2  # received, succeeded
    assert recovery_columns(audit_database) == {"dx-1": "FAILED"}


def test_overlapping_cycles_never_reconcile_an_account_twice(
    desk: Desk, tmp_path: Path, audit_database: str, redis_url: str
) -> None:
    """Two reconcile_all sent at once while every venue answers in 600 ms: each account is
    reconciled by exactly one of the two cycles and listed as skipped by the other, and the
    audit table holds one row per account."""
    server = start_desk(desk, latency_ms=dict.fromkeys(ACCOUNTS, 600))
    with stack_for(desk, tmp_path, audit_database, redis_url) as stack:
        stack.workers("w1", "w2")
        first = stack.client.send_task("recon.reconcile_all")
        second = stack.client.send_task("recon.reconcile_all")
        cycles = {first.id: result_of(first), second.id: result_of(second)}

    for cycle_id, cycle in cycles.items():
        assert_cycle_shape(cycle, cycle_id)
    reconciled = {cid: {r["account_id"] for r in c["reports"]} for cid, c in cycles.items()}
    skipped = {cid: set(c["skipped"]) for cid, c in cycles.items()}
    for account in ACCOUNTS:
        owners = [cid for cid in cycles if account in reconciled[cid]]
        assert len(owners) == 1, f"{account} reconciled by {owners}"
        (other,) = set(cycles) - set(owners)
        assert account in skipped[other]
        assert account not in skipped[owners[0]]

    rows = audit_rows(audit_database)
    assert len(rows) == len(ACCOUNTS)
    assert sorted(row["account_id"] for row in rows) == ACCOUNTS
    for row in rows:
        assert row["account_id"] in reconciled[row["cycle_id"]]
    assert {a: server.request_count(a) for a in ACCOUNTS} == dict.fromkeys(ACCOUNTS, 1)


def _fetch_of(stack: CeleryStack, account_id: str) -> tuple[str, dict[str, Any]] | None:
    """The worker node running the header task that fetches ``account_id``, and that task."""
    for node, tasks in stack.active_tasks().items():
        for task in tasks:
            if task["name"] == "recon.fetch_venue" and account_id in str(task["kwargs"]):
                return node, task
    return None


def test_a_worker_killed_mid_cycle_has_its_fetch_redelivered(
    desk: Desk, tmp_path: Path, audit_database: str, redis_url: str
) -> None:
    """SIGKILL of the worker running a slow venue's fetch: Redis redelivers the task to the
    other worker after the redelivery timeout, the cycle completes, and every account has
    exactly one audit row for it."""
    slow = dict.fromkeys(COINBASE, 2500)
    server = start_desk(desk, latency_ms=slow)
    with stack_for(
        desk,
        tmp_path,
        audit_database,
        redis_url,
        RECONCILIATION_REDELIVERY_SECONDS="6",
        RECONCILIATION_TIMEOUT_SECONDS="10",
    ) as stack:
        workers = {stack.node_name(p.name): p for p in stack.workers("w1", "w2")}
        result = stack.client.send_task("recon.reconcile_all")
        node, fetch = wait_for(
            lambda: _fetch_of(stack, "cb-main"),
            timeout=10,
            what="a worker running the Coinbase fetch",
        )
        # Both requests reached the venue (in flight, 2.5 s each) before the kill.
        wait_for(
            lambda: all(server.request_count(a) == 1 for a in COINBASE),
            timeout=5,
            what="the Coinbase requests",
        )
        victim = workers.pop(node)
        assert victim.kill() == -signal.SIGKILL
        (survivor,) = workers.values()
        cycle = result_of(result)
        assert survivor.alive()
        redelivered = survivor.count(f"Task recon.fetch_venue[{fetch['id']}] received")

    assert redelivered == 1
    assert_cycle_shape(cycle, result.id)
    reports = reports_by_account(cycle["reports"])
    assert sorted(reports) == ACCOUNTS
    assert all(r["status"] == "SUCCESS" for r in reports.values())
    rows = audit_rows(audit_database)
    assert sorted(row["account_id"] for row in rows) == ACCOUNTS
    assert {row["cycle_id"] for row in rows} == {result.id}
    # The killed attempt and the redelivered one each asked the venue once.
    assert {a: server.request_count(a) for a in COINBASE} == dict.fromkeys(COINBASE, 2)


#: Bad payloads for on-demand tasks, and what the error must name.
BAD_PAYLOADS: Final = (
    ("recon.reconcile_account", (), {"account": "cb-main"}, "'account'"),
    ("recon.reconcile_account", (), {"account_id": 42}, "'account_id'"),
    ("recon.reconcile_account", (), {"account_id": "no-such-account"}, "'no-such-account'"),
    ("recon.reconcile_account", ("cb-main",), {"account_id": "cb-main"}, "1 positional"),
    ("recon.reconcile_exchange", (), {"exchange": "kraken"}, "'exchange'"),
    ("recon.get_history", (), {"limit": "ten"}, "'limit'"),
    ("recon.reconcile_all", (), {"everything": True}, "'everything'"),
)


def _send_pickled(stack: CeleryStack, task_id: str) -> None:
    """A protocol-2 task message whose body claims to be pickle (never accepted)."""
    with stack.client.connection_for_write() as connection:
        producer = connection.Producer()
        producer.publish(
            b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00]\x94.",
            routing_key="celery",
            exchange="",
            content_type="application/x-python-serialize",
            content_encoding="binary",
            headers={"lang": "py", "task": "recon.reconcile_all", "id": task_id},
        )


def _nothing_pending(database: RedisDatabase) -> bool:
    """No message queued and none delivered but unacknowledged (waiting for redelivery)."""
    with contextlib.closing(database.connect()) as client:
        return client.llen("celery") == 0 and client.hlen("unacked") == 0


def test_malformed_payloads_fail_once_and_leave_the_worker_healthy(
    desk: Desk,
    tmp_path: Path,
    audit_database: str,
    redis_url: str,
    redis_database: RedisDatabase,
) -> None:
    """Unknown or extra arguments, wrong types and unknown names each end as one FAILURE whose
    message names the argument (never retried); a pickle payload is refused unrun; the same
    worker then reconciles a valid request."""
    start_desk(desk)
    with stack_for(desk, tmp_path, audit_database, redis_url) as stack:
        (worker,) = stack.workers("w1")
        sent = [
            (stack.client.send_task(name, args=args, kwargs=kwargs), needle)
            for name, args, kwargs, needle in BAD_PAYLOADS
        ]
        pickled_id = "pickled-" + sent[0][0].id
        _send_pickled(stack, pickled_id)
        failures = []
        for result, needle in sent:
            with pytest.raises(Exception) as raised:
                result_of(result)
            failures.append((result, needle, raised.value))
        valid = stack.client.send_task("recon.reconcile_account", kwargs={"account_id": "cb-main"})
        report = result_of(valid)
        # Every message is settled: none requeued, none waiting to be redelivered.
        wait_for(lambda: _nothing_pending(redis_database), timeout=10, what="an idle queue")
        assert worker.alive()
        log = worker.log()
        pickled_state = AsyncResult(pickled_id, app=stack.client).state

    for result, needle, error in failures:
        assert result.state == "FAILURE"
        assert needle in str(error), str(error)
        assert log.count(f"[{result.id}] received") == 1  # ran once: no retry, no redelivery
        assert f"[{result.id}] retry" not in log
    assert pickled_state == "PENDING"  # refused before it could run
    assert "ContentDisallowed" in log or "Refusing to deserialize" in log

    assert report["account_id"] == "cb-main"
    assert report["status"] == "SUCCESS"
    assert report["cycle_id"] == valid.id
    rows = audit_rows(audit_database)
    assert [(row["account_id"], row["cycle_id"]) for row in rows] == [("cb-main", valid.id)]
