"""Other services enqueue recon's tasks by name, from a process that imports nothing of recon.

A worker runs on the machine's Redis and a throwaway PostgreSQL database; ``enqueue_client.py``
runs under the venv's interpreter with ``-I -S`` in the test's folder (recon is not even
importable there) and sends each DESIGN §6 task with ``send_task``; its JSON output is checked
here, and against the audit table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import pytest

from tests.integration.workers_harness import (  # noqa: F401  (fixtures)
    RESULT_TIMEOUT,
    CeleryStack,
    audit_database_fixture,
    audit_rows,
    process_environment,
    redis_database_fixture,
    redis_url_fixture,
)
from tests.support import (
    Desk,
    coin,
    coinbase_venue,
    desk_fixture,  # noqa: F401  (the ``desk`` fixture)
    dydx_venue,
    reports_by_account,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

CLIENT: Final = Path(__file__).with_name("enqueue_client.py")
ACCOUNTS: Final = ("cb-main", "dx-0", "dx-1")
BOOK: Final = {"cb-main": {"BTC": "2"}, "dx-0": {"USDC": "500"}, "dx-1": {"USDC": "750.5"}}


def run_client(folder: Path, redis_url: str) -> dict[str, Any]:
    """``enqueue_client.py`` in its own interpreter; its JSON document."""
    command = [
        sys.executable,
        "-I",  # no current folder, no PYTHON* variables, no user site
        "-S",  # no site-packages and no .pth hooks (the editable install's finder is one)
        str(CLIENT),
        "--site-packages",
        sysconfig.get_paths()["purelib"],
        "--broker",
        redis_url,
        "--backend",
        redis_url,
        "--account",
        "cb-main",
        "--exchange",
        "dydx",
        "--timeout",
        str(RESULT_TIMEOUT),
    ]
    completed = subprocess.run(
        command, cwd=folder, capture_output=True, text=True, timeout=4 * RESULT_TIMEOUT, check=False
    )
    assert completed.returncode == 0, completed.stderr
    document: dict[str, Any] = json.loads(completed.stdout)
    return document


def test_each_task_enqueued_by_name_from_a_foreign_process_returns_its_json(
    desk: Desk, tmp_path: Path, audit_database: str, redis_url: str
) -> None:
    """recon.reconcile_account gives a report, reconcile_exchange a list, reconcile_all a cycle,
    get_history past reports newest first, and a bad payload a readable error naming the
    argument — all to a client that never imported recon."""
    desk.start(
        coinbase_venue("cb-main", balances=[coin("BTC", "2")]),
        dydx_venue(
            "dx-0", subaccount=0, assets=[{"symbol": "USDC", "side": "LONG", "size": "500"}]
        ),
        dydx_venue(
            "dx-1", subaccount=1, assets=[{"symbol": "USDC", "side": "LONG", "size": "750.5"}]
        ),
        book=BOOK,
    )
    client_folder = tmp_path / "another-service"
    client_folder.mkdir()
    env = process_environment(desk, database_url=audit_database, redis_url=redis_url)
    with CeleryStack(tmp_path, env, redis_url) as stack:
        stack.workers("w1")
        out = run_client(client_folder, redis_url)

    assert out["recon_modules"] == []
    assert out["recon_importable"] == []

    single = out["recon.reconcile_account"]
    report = single["result"]
    assert report["account_id"] == "cb-main"
    assert report["exchange"] == "coinbase"
    assert report["status"] == "SUCCESS"
    assert report["cycle_id"] == single["id"]
    assert report["exchange_balances"] == {"BTC": "2"}

    venue = out["recon.reconcile_exchange"]
    assert isinstance(venue["result"], list)
    by_account = reports_by_account(venue["result"])
    assert sorted(by_account) == ["dx-0", "dx-1"]
    assert {r["cycle_id"] for r in venue["result"]} == {venue["id"]}
    assert by_account["dx-1"]["exchange_balances"] == {"USDC": "750.5"}

    whole = out["recon.reconcile_all"]
    cycle = whole["result"]
    assert cycle["cycle_id"] == whole["id"]
    assert cycle["status"] == "SUCCESS"
    assert sorted(r["account_id"] for r in cycle["reports"]) == sorted(ACCOUNTS)
    assert cycle["skipped"] == []

    history = out["recon.get_history"]["result"]
    assert [r["cycle_id"] for r in history] == [whole["id"], single["id"]]  # newest first
    times = [datetime.fromisoformat(r["reconciled_at"]) for r in history]
    assert times == sorted(times, reverse=True)
    assert history[0] == reports_by_account(cycle["reports"])["cb-main"]

    bad = out["bad_payload"]
    assert bad["state"] == "FAILURE"
    assert bad["type"] == "InvalidTaskPayload"
    assert "'account_id'" in bad["message"]
    assert "recon.reconcile_account" in bad["message"]

    rows = audit_rows(audit_database)
    assert sorted((row["cycle_id"], row["account_id"]) for row in rows) == sorted(
        [(single["id"], "cb-main")]
        + [(venue["id"], a) for a in ("dx-0", "dx-1")]
        + [(whole["id"], a) for a in ACCOUNTS]
    )
