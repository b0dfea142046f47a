"""Fault injection with real processes: recon's Celery workers (``celery -A workers worker``),
a real Redis and a real PostgreSQL, and the faults made for real.

- Redis stopped and started again in the middle of a cycle: a private ``redis-server`` of the
  test's own (the machine's shared Redis is never stopped), with the append-only file on as
  in production (``docker-compose.yml``), so that a restart keeps what it had queued.
- PostgreSQL unreachable while the cycle's join writes, or when a fresh worker's first task
  is the join or a fetch: the workers reach the test's throwaway database through a loopback
  TCP proxy that the test cuts and restores.
- The venue hanging past the request timeout, resetting connections, answering garbage, and
  hanging for a while then recovering: the sandbox venue's injected faults.

(A worker killed mid-cycle is ``test_workers_redis.py``'s
``test_a_worker_killed_mid_cycle_has_its_fetch_redelivered``.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import pytest
from celery.result import AsyncResult
from sqlalchemy.engine import make_url

from infra.db import create_audit_engine
from infra.db.verify import verify_audit
from infra.sandbox import SandboxServer
from tests.integration.faults import PrivateRedis, TcpProxy
from tests.integration.workers_harness import (  # noqa: F401  (fixtures)
    RESULT_TIMEOUT,
    CeleryProcess,
    CeleryStack,
    audit_database_fixture,
    audit_rows,
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
    fault,
    reports_by_account,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

#: The join's audit-write retry line (workers/tasks.py, ``_retry_audit``).
AUDIT_RETRY_LINE: Final = "audit write failed, will retry: cycle="
#: How Celery's log line of a task's end reads (after ``Task <name>[<id>]``).
TASK_ENDS: Final = ("] succeeded in ", "] retry: ", "] raised unexpected: ")


def usdc(amount: str) -> list[dict[str, str]]:
    return [{"symbol": "USDC", "side": "LONG", "size": amount}]


def healthy_venues(latency_ms: int) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    """Two Coinbase accounts and two dYdX subaccounts answering in ``latency_ms``, and the
    book that matches them (every report SUCCESS)."""
    accounts = [
        coinbase_venue("cb-main", key="cb-main", balances=[coin("BTC", "1.5")]),
        coinbase_venue("cb-desk2", key="cb-desk2", balances=[coin("ETH", "12.25")]),
        dydx_venue("dx-0", subaccount=0, assets=usdc("1000")),
        dydx_venue("dx-1", subaccount=1, assets=usdc("1001")),
    ]
    for account in accounts:
        account["latency_ms"] = latency_ms
    book = {
        "cb-main": {"BTC": "1.5"},
        "cb-desk2": {"ETH": "12.25"},
        "dx-0": {"USDC": "1000"},
        "dx-1": {"USDC": "1001"},
    }
    return accounts, book


def result_of(result: AsyncResult[Any]) -> Any:
    """The task's result, waiting on the Redis result backend."""
    return result.get(timeout=RESULT_TIMEOUT, interval=0.05)


def assert_one_success_row_each(
    cycle: Mapping[str, Any], cycle_id: str, accounts: Sequence[str], database_url: str
) -> None:
    """The cycle is ``cycle_id``, every account SUCCESS, and the audit table holds exactly one
    row per account for it, each the report the cycle returned."""
    assert cycle["cycle_id"] == cycle_id
    reports = reports_by_account(cycle["reports"])
    assert sorted(reports) == sorted(accounts)
    assert {a: r["status"] for a, r in reports.items()} == dict.fromkeys(accounts, "SUCCESS")
    rows = [row for row in audit_rows(database_url) if row["cycle_id"] == cycle_id]
    assert sorted(row["account_id"] for row in rows) == sorted(accounts)  # none lost, none twice
    assert {row["account_id"]: row["reconciliation_id"] for row in rows} == {
        a: r["reconciliation_id"] for a, r in reports.items()
    }


def all_requests_reached(server: SandboxServer, accounts: Sequence[str]) -> bool:
    return all(server.request_count(a) >= 1 for a in accounts)


def ready_lines(stack: CeleryStack, worker: CeleryProcess) -> int:
    return worker.count(f"{stack.node_name(worker.name)} ready.")


# --- Redis restarted mid-cycle ---------------------------------------------------------------

#: What kombu 5.7.0's own Redis transport made a worker holding an unacknowledged task log
#: when the broker connection dropped, before it exited (see ``workers/redis_transport.py``).
CELERY_CONNECTION_LOSS_CRASH: Final = "Unrecoverable error"
#: A worker's line each time it (re)connects to the broker.
CONNECTED: Final = "celery.worker.consumer.connection: Connected to "


def redis_stack(
    desk: Desk, tmp_path: Path, audit_database: str, broker: PrivateRedis
) -> CeleryStack:
    """The test's processes on the private Redis (broker and result backend)."""
    variables = process_environment(
        desk,
        database_url=audit_database,
        redis_url=broker.url(0),
        RECONCILIATION_TIMEOUT_SECONDS="10",
        RECONCILIATION_REDELIVERY_SECONDS="5",
    )
    return CeleryStack(tmp_path, variables, broker.url(0))


def send(stack: CeleryStack, name: str) -> str:
    """Send task ``name``; its id. (The private-Redis tests keep no AsyncResult: one left for
    the garbage collector would unsubscribe from a Redis that is gone by then.)"""
    return str(stack.client.send_task(name).id)


def result_by_id(stack: CeleryStack, task_id: str) -> Any:
    """The result of task ``task_id``, waiting on the Redis result backend."""
    return result_of(AsyncResult(task_id, app=stack.client))


def private_redis(tmp_path: Path) -> PrivateRedis:
    folder = tmp_path / "redis"
    folder.mkdir()
    return PrivateRedis(folder)


def restart_redis_mid_cycle(
    server: SandboxServer,
    accounts: Sequence[str],
    broker: PrivateRedis,
    workers: Sequence[CeleryProcess],
    *,
    until_fetches_end: bool = False,
) -> None:
    """Once every venue request of the cycle is in flight (so every fetch task is running and
    unacknowledged), stop Redis; once every worker has seen the connection go (and, with
    ``until_fetches_end``, every fetch has ended), start it again on the same port."""
    wait_for(
        lambda: all_requests_reached(server, accounts),
        timeout=15,
        what="every venue request in flight",
    )
    assert broker.stop() == 0
    for worker in workers:
        worker.wait_for_log("Connection to broker lost", timeout=15)
    if until_fetches_end:
        wait_for(
            lambda: sum(fetches_ended(w) for w in workers) >= 2,
            timeout=15,
            what="both fetches to end",
        )
    broker.start()


def task_ends(worker: CeleryProcess, name: str) -> int:
    """How many runs of task ``name`` the worker ended (succeeded, retried or failed)."""
    return sum(
        1
        for line in worker.log().splitlines()
        if f"Task {name}[" in line and any(end in line for end in TASK_ENDS)
    )


def fetches_ended(worker: CeleryProcess) -> int:
    """How many fetch tasks the worker ended, counting those whose result could not be stored
    (Redis down)."""
    unstored = worker.count("Exception raised outside body: network:ConnectionError")
    return task_ends(worker, "recon.fetch_venue") + unstored


def wait_reconnected_or_dead(worker: CeleryProcess) -> None:
    """Wait until the worker connected to the broker again after losing it, or exited."""
    wait_for(
        lambda: not worker.alive() or worker.count(CONNECTED) >= 2,
        timeout=20,
        what=f"{worker.name} to reconnect or exit",
    )


@pytest.mark.parametrize("outage", ["short", "past_the_fetches"])
def test_redis_restarted_mid_cycle_the_workers_survive_and_the_cycle_completes_once(
    desk: Desk, tmp_path: Path, audit_database: str, outage: str
) -> None:
    """Redis (broker and result backend) stopped while every venue fetch of a cycle is in
    flight, and started again on the same port, either before the fetches end ("short") or
    only after they ended ("past_the_fetches": their results could not be stored). The
    workers reconnect and stay up (``workers/redis_transport.py``: with kombu's own transport
    every worker running a task died of it), the fetches whose acknowledgement or result was
    lost are redelivered after the redelivery timeout, the cycle completes and its result
    reaches the client (which reconnects too), every account has exactly one audit row for it
    (none lost, none twice), no venue is asked more than twice, and a next cycle runs on the
    same workers.

    The private Redis keeps its append-only file (fsync always) as production's does: the
    restart keeps the queue, the unacknowledged messages and the chord's state. (A Redis
    without persistence loses them, and the cycle with them: a deployment choice, made in
    docker-compose.yml, not a fault recon can absorb.)
    """
    venues, book = healthy_venues(latency_ms=1500)
    accounts = sorted(book)
    server = desk.start(*venues, book=book)
    with (
        private_redis(tmp_path) as broker,
        redis_stack(desk, tmp_path, audit_database, broker) as stack,
    ):
        workers = stack.workers("w1", "w2")
        cycle_id = send(stack, "recon.reconcile_all")
        restart_redis_mid_cycle(
            server, accounts, broker, workers, until_fetches_end=outage == "past_the_fetches"
        )
        for worker in workers:
            wait_reconnected_or_dead(worker)
        tails = "\n".join(w.tail(5) for w in workers)
        assert all(worker.alive() for worker in workers), tails
        cycle = result_by_id(stack, cycle_id)
        first_requests = {a: server.request_count(a) for a in accounts}
        server.reset()
        next_id = send(stack, "recon.reconcile_all")
        next_cycle = result_by_id(stack, next_id)
        assert all(worker.alive() for worker in workers)
        assert [ready_lines(stack, w) for w in workers] == [1, 1]  # never restarted
        assert not any(CELERY_CONNECTION_LOSS_CRASH in w.log() for w in workers)

    assert cycle["status"] == "SUCCESS"
    assert_one_success_row_each(cycle, cycle_id, accounts, audit_database)
    assert next_cycle["status"] == "SUCCESS"
    assert_one_success_row_each(next_cycle, next_id, accounts, audit_database)
    assert {row["cycle_id"] for row in audit_rows(audit_database)} == {cycle_id, next_id}
    # A redelivered fetch asks its venue again; nothing asks a third time.
    assert set(first_requests.values()) <= {1, 2}, first_requests


# --- PostgreSQL unreachable while the join writes --------------------------------------------


def test_postgres_unreachable_while_the_join_writes_the_join_retries(
    desk: Desk, tmp_path: Path, audit_database: str, redis_url: str
) -> None:
    """The workers' database connection runs through a proxy that is cut while the venue
    fetches are in flight, so the join finds PostgreSQL unreachable; it stays down until the
    join has failed three times (retries after 1 s, 2 s and 5 s), then comes back: the join's
    next retry writes the cycle, whose result arrives, one row per account (none lost, none
    twice), and the audit chain verifies."""
    venues, book = healthy_venues(latency_ms=1500)
    accounts = sorted(book)
    server = desk.start(*venues, book=book)
    retry_line = AUDIT_RETRY_LINE + "{cycle} in_s={seconds} "
    with TcpProxy(*postgres_address(audit_database)) as proxy:
        variables = process_environment(
            desk, database_url=through(proxy, audit_database), redis_url=redis_url
        )
        # One worker, already running when the cut comes; the next tests start a worker whose
        # first task meets the cut.
        with CeleryStack(tmp_path, variables, redis_url) as stack:
            (worker,) = stack.workers("w1")
            result = stack.client.send_task("recon.reconcile_all")
            wait_for(
                lambda: all_requests_reached(server, accounts),
                timeout=15,
                what="every venue request in flight",
            )
            proxy.cut()
            wait_for(
                lambda: retry_line.format(cycle=result.id, seconds=5) in worker.log(),
                timeout=20,
                what="three failed audit writes",
            )
            connections_before = proxy.accepted
            proxy.restore()
            cycle = result_of(result)
            assert proxy.accepted > connections_before  # the write went through, after the cut
            assert worker.alive()
            log = worker.log()

    assert log.count(AUDIT_RETRY_LINE) == 3
    for seconds in (1, 2, 5):
        assert log.count(retry_line.format(cycle=result.id, seconds=seconds)) == 1
    assert f"cycle finished: cycle={result.id} accounts={len(accounts)} status=SUCCESS" in log
    assert cycle["status"] == "SUCCESS"
    assert_one_success_row_each(cycle, result.id, accounts, audit_database)
    assert len(audit_rows(audit_database)) == len(accounts)
    assert {a: server.request_count(a) for a in accounts} == dict.fromkeys(accounts, 1)
    engine = create_audit_engine(audit_database)
    try:
        assert [str(problem) for problem in verify_audit(engine)] == []
    finally:
        engine.dispose()


def postgres_address(database_url: str) -> tuple[str, int]:
    url = make_url(database_url)
    return url.host or "127.0.0.1", url.port or 5432


def through(proxy: TcpProxy, database_url: str) -> str:
    """``database_url`` with the proxy's port: the same database, reached through the proxy."""
    return make_url(database_url).set(port=proxy.port).render_as_string(hide_password=False)


def test_postgres_unreachable_when_the_join_is_a_fresh_workers_first_task(
    desk: Desk, tmp_path: Path, audit_database: str, redis_url: str
) -> None:
    """The cycle's one fetch runs on a worker that then shuts down (warm: the fetch ends and
    the join is queued); PostgreSQL becomes unreachable and a fresh worker starts, whose first
    task is the join. Its first use of the audit store (the schema check, then the write)
    cannot reach it: the join retries as for a failed write, and once PostgreSQL is back the
    cycle completes, one row per account.
    """
    book = {"dx-0": {"USDC": "1000"}, "dx-1": {"USDC": "1001"}}
    venues = [
        dydx_venue("dx-0", subaccount=0, assets=usdc("1000")) | {"latency_ms": 1500},
        dydx_venue("dx-1", subaccount=1, assets=usdc("1001")) | {"latency_ms": 1500},
    ]
    accounts = sorted(book)
    server = desk.start(*venues, book=book)
    with TcpProxy(*postgres_address(audit_database)) as proxy:
        variables = process_environment(
            desk, database_url=through(proxy, audit_database), redis_url=redis_url
        )
        with CeleryStack(tmp_path, variables, redis_url) as stack:
            (first,) = stack.workers("w1")
            result = stack.client.send_task("recon.reconcile_all")
            wait_for(
                lambda: all_requests_reached(server, accounts),
                timeout=15,
                what="the venue requests in flight",
            )
            assert first.terminate() == 0  # the fetch ends first; the join waits in the queue
            assert "Task recon.compare_and_report[" not in first.log()
            proxy.cut()
            (fresh,) = stack.workers("w2")
            wait_for(
                lambda: AUDIT_RETRY_LINE + result.id in fresh.log(),
                timeout=15,
                what="the join to fail to open the audit store",
            )
            proxy.restore()
            cycle = result_of(result)
            log = fresh.log()

    assert "cannot open the audit store" in log
    assert cycle["status"] == "SUCCESS"
    assert_one_success_row_each(cycle, result.id, accounts, audit_database)
    assert {a: server.request_count(a) for a in accounts} == dict.fromkeys(accounts, 1)


def test_postgres_unreachable_when_a_fetch_is_a_fresh_workers_first_task(
    desk: Desk, tmp_path: Path, audit_database: str, redis_url: str
) -> None:
    """The first venue's fetch runs on a worker that runs one task at a time (the second
    venue's fetch waits in the queue) and then shuts down; PostgreSQL becomes unreachable and
    a fresh worker starts, whose first task is the second fetch. A fetch does not need the
    database: once PostgreSQL is back the cycle must complete, one row per account."""
    venues, book = healthy_venues(latency_ms=500)
    accounts = sorted(book)
    desk.start(*venues, book=book)
    with TcpProxy(*postgres_address(audit_database)) as proxy:
        variables = process_environment(
            desk, database_url=through(proxy, audit_database), redis_url=redis_url
        )
        with CeleryStack(tmp_path, variables, redis_url) as stack:
            first = stack.start_worker("w1", concurrency=1)
            stack.wait_ready(first)
            result = stack.client.send_task("recon.reconcile_all")
            wait_for(
                lambda: first.count("Task recon.fetch_venue[") >= 1,
                timeout=15,
                what="the first fetch to start",
            )
            assert first.terminate() == 0
            assert first.count("Task recon.fetch_venue[") == 2  # received, succeeded: one fetch
            proxy.cut()
            (fresh,) = stack.workers("w2")
            wait_for(
                lambda: task_ends(fresh, "recon.fetch_venue"),
                timeout=15,
                what="the fresh worker to run the second fetch",
            )
            proxy.restore()
            cycle = result_of(result)

    assert cycle["status"] == "SUCCESS"
    assert_one_success_row_each(cycle, result.id, accounts, audit_database)


# --- the venue hanging, resetting, answering garbage ------------------------------------------

#: Retries after the first attempt, and the per-request timeout, of the venue-fault test.
VENUE_RETRIES: Final = 2
#: dYdX subaccounts of the venue-fault test: id → (subaccount, USDC held, its fault rules).
FAULTY: Final[Mapping[str, tuple[int, str, Sequence[Mapping[str, Any]]]]] = {
    "dx-ok": (0, "1000", ()),
    "dx-hang": (1, "1001", (fault("timeout", "always", seconds=5),)),
    "dx-reset": (2, "1002", (fault("reset", "always"),)),
    "dx-garbage": (3, "1003", (fault("malformed", "always", variant="html"),)),
    "dx-truncated": (4, "1004", (fault("malformed", "always", variant="truncated"),)),
    # Hangs for the first two requests, answers the third (the last retry).
    "dx-flaky": (5, "1005", (fault("timeout", VENUE_RETRIES, seconds=5),)),
}
#: What each faulty account's report must say: its error kind and the requests it took.
EXPECTED_ERRORS: Final = {
    "dx-hang": ("timeout", VENUE_RETRIES + 1),
    "dx-reset": ("unavailable", VENUE_RETRIES + 1),
    "dx-garbage": ("malformed", 1),  # permanent: never retried
    "dx-truncated": ("malformed", 1),
}


def test_venue_hangs_resets_and_garbage_end_as_error_reports_beside_healthy_ones(
    desk: Desk, tmp_path: Path, audit_database: str, redis_url: str
) -> None:
    """One cycle over two workers with a venue account per fault: hanging past the 1 s
    request timeout (ERROR timeout), resetting every connection (ERROR unavailable), answering
    an HTML page or a truncated body (ERROR malformed, asked once); each failed report has no
    venue balances. An account that hangs twice and answers on its last retry, and the
    healthy accounts, are SUCCESS; one audit row each; both workers still running, never
    restarted, no crashed fetch."""
    venues = [
        coinbase_venue("cb-main", key="cb-main", balances=[coin("BTC", "1.5")]),
        *(
            dydx_venue(account, subaccount=n, assets=usdc(amount), faults=faults)
            for account, (n, amount, faults) in FAULTY.items()
        ),
    ]
    book = {"cb-main": {"BTC": "1.5"}} | {a: {"USDC": amt} for a, (_, amt, _) in FAULTY.items()}
    accounts = sorted(book)
    server = desk.start(*venues, book=book)
    variables = process_environment(
        desk,
        database_url=audit_database,
        redis_url=redis_url,
        RECONCILIATION_RETRY_COUNT=str(VENUE_RETRIES),
        RECONCILIATION_TIMEOUT_SECONDS="1",
    )
    with CeleryStack(tmp_path, variables, redis_url) as stack:
        workers = stack.workers("w1", "w2")
        result = stack.client.send_task("recon.reconcile_all")
        cycle = result_of(result)
        assert all(worker.alive() for worker in workers)
        assert [ready_lines(stack, w) for w in workers] == [1, 1]
        logs = "".join(worker.log() for worker in workers)

    assert cycle["cycle_id"] == result.id
    assert cycle["status"] == "ERROR"
    reports = reports_by_account(cycle["reports"])
    assert sorted(reports) == accounts
    for account, (kind, requests) in EXPECTED_ERRORS.items():
        report = reports[account]
        assert report["status"] == "ERROR", account
        assert report["error"]["kind"] == kind, (account, report["error"])
        assert report["exchange_balances"] == {}, account  # a failure is never a zero balance
        assert report["discrepancies"] == [], account
        assert server.request_count(account) == requests, account
    for account in ("cb-main", "dx-ok", "dx-flaky"):
        assert reports[account]["status"] == "SUCCESS", reports[account]
        assert reports[account]["error"] is None
        assert reports[account]["exchange_balances"] == book[account]
    assert server.request_count("cb-main") == 1
    assert server.request_count("dx-ok") == 1
    assert server.request_count("dx-flaky") == VENUE_RETRIES + 1
    for attempt in range(1, VENUE_RETRIES + 1):
        assert f"account=dx-flaky attempt={attempt} kind=timeout" in logs
    assert f"account=dx-flaky attempt={VENUE_RETRIES + 1} " not in logs
    assert f"account=dx-hang attempt={VENUE_RETRIES + 1} kind=timeout" in logs
    assert f"account=dx-reset attempt={VENUE_RETRIES + 1} kind=unavailable" in logs
    assert "venue fetch crashed" not in logs

    listed = audit_rows(audit_database)
    assert sorted(row["account_id"] for row in listed) == accounts  # one row each
    rows = {row["account_id"]: row for row in listed}
    assert {row["cycle_id"] for row in rows.values()} == {result.id}
    assert {a: rows[a]["status"] for a in accounts} == {a: reports[a]["status"] for a in accounts}
    assert {a: rows[a]["error_json"]["kind"] for a in EXPECTED_ERRORS} == {
        a: kind for a, (kind, _) in EXPECTED_ERRORS.items()
    }
