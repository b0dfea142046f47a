"""Failures of one cycle: venue faults injected by the sandbox, and a failing audit store.

Venue faults run through ``recon reconcile --json`` in process against a sandbox on loopback;
the audit-store failure runs :func:`app.cycle.run_cycle` with a real
:class:`~infra.db.repository.AuditRepository` whose SQLite transaction fails after its insert.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

import pytest
from sqlalchemy import event

from app import bootstrap
from app.cycle import run_cycle
from infra.db.engine import create_audit_engine
from infra.db.errors import AuditStoreError
from infra.db.repository import AuditRepository
from tests.support import (
    Desk,
    coin,
    coinbase_venue,
    desk_fixture,  # noqa: F401  (the ``desk`` fixture)
    dydx_venue,
    fault,
)

CB_BOOK = {"cb-x": {"BTC": "1.25", "USD": "100"}}


def _cb(*faults: dict[str, Any]) -> dict[str, Any]:
    """cb-x holding what CB_BOOK says, with ``faults``."""
    return coinbase_venue(
        "cb-x",
        balances=[coin("BTC", "1", "0.25"), coin("USD", "100", kind="ACCOUNT_TYPE_FIAT")],
        faults=faults,
    )


def _only_report(desk: Desk, *, exit_code: int, **env: str) -> dict[str, Any]:
    result, cycle = desk.reconcile_json(**env)
    assert result.exit_code == exit_code, result.stderr
    assert len(cycle["reports"]) == 1
    report: dict[str, Any] = cycle["reports"][0]
    return report


def _assert_failed(report: dict[str, Any], kind: str) -> None:
    """An ERROR report of ``kind``: the book kept, no venue balance, no discrepancy."""
    assert report["status"] == "ERROR"
    assert report["error"]["kind"] == kind
    assert report["exchange_balances"] == {}
    assert report["discrepancies"] == []
    assert report["local_balances"] == {"BTC": "1.25", "USD": "100"}


def test_venue_timeout_is_an_error_of_kind_timeout(desk: Desk) -> None:
    """A venue that does not answer within the client timeout ends ERROR, kind ``timeout``."""
    server = desk.start(_cb(fault("timeout", "always", seconds=5)), book=CB_BOOK)

    report = _only_report(
        desk, exit_code=3, RECONCILIATION_TIMEOUT_SECONDS="0.3", RECONCILIATION_RETRY_COUNT="0"
    )

    _assert_failed(report, "timeout")
    assert server.request_count("cb-x") == 1
    assert [(r["status"], r["account_id"]) for r in desk.rows()] == [("ERROR", "cb-x")]


def test_connection_resets_are_retried_until_the_venue_recovers(desk: Desk) -> None:
    """Two reset connections then a good answer: the retries recover and the report is SUCCESS."""
    server = desk.start(_cb(fault("reset", 2)), book=CB_BOOK)

    report = _only_report(desk, exit_code=0, RECONCILIATION_RETRY_COUNT="3")

    assert report["status"] == "SUCCESS"
    assert report["error"] is None
    assert report["exchange_balances"] == {"BTC": "1.25", "USD": "100"}
    assert server.request_count("cb-x") == 3


def test_connection_resets_past_the_retries_are_unavailable(desk: Desk) -> None:
    """A venue that keeps resetting the connection ends ERROR, kind ``unavailable``."""
    server = desk.start(_cb(fault("reset", "always")), book=CB_BOOK)

    report = _only_report(desk, exit_code=3, RECONCILIATION_RETRY_COUNT="1")

    _assert_failed(report, "unavailable")
    assert server.request_count("cb-x") == 2


@pytest.mark.parametrize("variant", ["html", "truncated", "bad_amount", "negative"])
def test_malformed_balance_data_is_an_error_never_a_zero_balance(desk: Desk, variant: str) -> None:
    """A body that is not valid balance data ends ERROR ``malformed``, unretried, no findings."""
    server = desk.start(_cb(fault("malformed", "always", variant=variant)), book=CB_BOOK)

    report = _only_report(desk, exit_code=3, RECONCILIATION_RETRY_COUNT="3")

    _assert_failed(report, "malformed")
    assert server.request_count("cb-x") == 1
    (row,) = desk.rows()
    assert (row["status"], row["discrepancy_count"]) == ("ERROR", 0)


def test_malformed_dydx_amount_is_an_error(desk: Desk) -> None:
    """A dYdX position size that is not a decimal ends ERROR ``malformed`` for that account."""
    desk.start(
        dydx_venue(
            "dx-0",
            subaccount=0,
            assets=[{"symbol": "USDC", "side": "LONG", "size": "10"}],
            faults=[fault("malformed", "always", variant="bad_amount")],
        ),
        book={"dx-0": {"USDC": "10"}},
    )

    report = _only_report(desk, exit_code=3)

    assert (report["status"], report["error"]["kind"]) == ("ERROR", "malformed")
    assert (report["exchange_balances"], report["discrepancies"]) == ({}, [])


def test_auth_failure_is_not_retried(desk: Desk) -> None:
    """A 401 ends ERROR of kind ``auth`` after one request, whatever the retry count."""
    server = desk.start(_cb(fault("auth", "always")), book=CB_BOOK)

    report = _only_report(desk, exit_code=3, RECONCILIATION_RETRY_COUNT="3")

    _assert_failed(report, "auth")
    assert server.request_count("cb-x") == 1


def test_rate_limit_honours_retry_after_then_succeeds(desk: Desk) -> None:
    """A 429 is retried after the venue's Retry-After (dYdX: milliseconds), then succeeds."""
    server = desk.start(
        dydx_venue(
            "dx-0",
            subaccount=0,
            assets=[{"symbol": "USDC", "side": "LONG", "size": "10"}],
            faults=[fault("rate_limit", 1, retry_after_ms=300)],
        ),
        book={"dx-0": {"USDC": "10"}},
    )

    result, cycle = desk.reconcile_json(RECONCILIATION_RETRY_COUNT="1")

    assert result.exit_code == 0, result.stderr
    assert cycle["reports"][0]["status"] == "SUCCESS"
    assert server.request_count("dx-0") == 2
    # The wait is the venue's 300 ms, not the seed schedule's first 100 ms.
    assert "kind=rate_limited delay_s=0.300" in result.stderr


def test_one_failing_venue_does_not_stop_the_others(desk: Desk) -> None:
    """A venue down for one account leaves the other accounts' reports intact in the cycle."""
    desk.start(
        _cb(fault("status_5xx", "always", status=502)),
        dydx_venue("dx-0", subaccount=0, assets=[{"symbol": "USDC", "side": "LONG", "size": "10"}]),
        book={**CB_BOOK, "dx-0": {"USDC": "10"}},
    )

    result, cycle = desk.reconcile_json()

    statuses = {r["account_id"]: (r["status"], r["error"]) for r in cycle["reports"]}
    assert statuses["dx-0"] == ("SUCCESS", None)
    assert statuses["cb-x"][0] == "ERROR"
    assert statuses["cb-x"][1]["kind"] == "unavailable"
    assert result.exit_code == 3
    assert len(desk.rows()) == 2


# --- the audit store fails -------------------------------------------------------------------


def test_audit_failure_rolls_the_cycle_transaction_back(desk: Desk) -> None:
    """An audit write failing after its insert ran raises AuditStoreError and leaves no row."""
    desk.start(
        _cb(),
        dydx_venue("dx-0", subaccount=0, assets=[{"symbol": "USDC", "side": "LONG", "size": "10"}]),
        book={**CB_BOOK, "dx-0": {"USDC": "10"}},
    )
    environ = desk.env()
    configuration = bootstrap.load_configuration(environ)
    engine = create_audit_engine(desk.database_url)
    rows_inside: list[int] = []

    def fail_after_insert(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO RECONCILIATION_AUDIT"):
            # The rows are in the open transaction: count them, then fail like a full disk.
            seen = cursor.connection.execute("SELECT count(*) FROM reconciliation_audit")
            rows_inside.append(seen.fetchone()[0])
            raise sqlite3.OperationalError("database or disk is full (injected)")

    event.listen(engine, "after_cursor_execute", fail_after_insert)
    try:
        with bootstrap.build_runtime(configuration, configuration.roster.accounts, environ) as rt:
            context = dataclasses.replace(rt.context, audit=AuditRepository(engine))
            with pytest.raises(AuditStoreError) as raised:
                run_cycle(
                    cycle_id="c0ffee00-0000-4000-8000-000000000001", plans=rt.plans, context=context
                )
    finally:
        engine.dispose()

    assert rows_inside == [2]
    assert "nothing written" in str(raised.value)
    assert "disk is full" in str(raised.value)
    assert desk.rows() == []


def test_audit_store_that_cannot_be_opened_exits_6(desk: Desk) -> None:
    """A database URL naming a folder exits 6 with a message about the audit store, no report."""
    server = desk.start(_cb(), book=CB_BOOK)

    result = desk.recon("reconcile", RECONCILIATION_DATABASE_URL=f"sqlite:///{desk.folder}")

    assert result.exit_code == 6
    assert result.stdout == ""
    assert result.stderr.startswith("recon: ")
    assert "audit" in result.stderr
    assert "Traceback" not in result.stderr
    assert server.request_count("cb-x") == 0


def test_history_from_an_audit_store_that_cannot_be_opened_exits_6(desk: Desk) -> None:
    """``recon history`` on a database that cannot be opened exits 6, not with a traceback."""
    desk.start(_cb(), book=CB_BOOK)

    result = desk.recon("history", RECONCILIATION_DATABASE_URL=f"sqlite:///{desk.folder}")

    assert result.exit_code == 6
    assert "audit" in result.stderr
