"""A fresh user's first run: ``recon`` with no configuration at all, in an empty folder.

The console script runs in a subprocess with a clean environment, so it reads the built-in
roster, serves the embedded sandbox venue on 127.0.0.1:9000 for the run, and creates
``recon.db`` in the working folder. The built-in demo desk shows each status once (see the
comments of ``infra/sandbox/data/roster.toml``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.render import HISTORY_COLUMNS
from tests.support import recon_script

#: What ``recon reconcile --all`` finds on the built-in demo desk, account by account.
EXPECTED = {
    "cb-main": "SUCCESS",
    "cb-desk2": "ERROR",
    "dydx-0": "WARNING",
    "dydx-1": "CRITICAL",
    "kraken-main": "SUCCESS",
    "binance-main": "SUCCESS",
}
SANDBOX_PORT = 9000
#: A route of the built-in scenario (dydx-1) that only the sandbox venue answers this way.
PROBE = (
    f"http://127.0.0.1:{SANDBOX_PORT}/v4/addresses/"
    "dydx1sandboxdemodesk0000000000000000000qz/subaccountNumber/1"
)


@pytest.fixture(autouse=True)
def _sandbox_port_usable() -> None:
    """Skip when port 9000 is held by something other than the recon sandbox venue."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex(("127.0.0.1", SANDBOX_PORT)) != 0:
            return  # free: recon serves its embedded sandbox there
    try:
        response = httpx.get(PROBE, timeout=2)
        served = response.status_code == 200 and "subaccount" in response.json()
    except (httpx.HTTPError, ValueError):
        served = False
    if not served:
        pytest.skip(f"port {SANDBOX_PORT} is taken by something that is not the recon sandbox")


def _start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """The console script with a clean environment (no RECONCILIATION_* variable) in ``cwd``."""
    environ = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(cwd), "LC_ALL": "C.UTF-8"}
    return subprocess.Popen(
        [str(recon_script()), *args],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )


def _finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    """Wait for ``process`` (bounded) and collect its exit code and output."""
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _recon(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the console script in ``cwd`` to its end."""
    return _finish(_start(cwd, *args))


def test_reconcile_all_on_the_builtin_default_shows_every_status(tmp_path: Path) -> None:
    """A first ``recon reconcile --all`` prints SUCCESS, WARNING, ERROR, CRITICAL and exits 4."""
    run = _recon(tmp_path, "reconcile", "--all")

    assert run.returncode == 4, run.stderr
    lines = run.stdout.splitlines()
    for account, status in EXPECTED.items():
        row = next(line for line in lines if f" {account} " in line and "│" in line)
        assert status in row, row
    assert "cycle status: CRITICAL" in run.stdout
    assert (tmp_path / "recon.db").is_file()


def test_json_run_then_history_on_the_builtin_default(tmp_path: Path) -> None:
    """``--json`` prints the cycle document alone; history then returns its reports."""
    run = _recon(tmp_path, "reconcile", "--all", "--json")

    assert run.returncode == 4, run.stderr
    cycle: dict[str, Any] = json.loads(run.stdout)
    assert cycle["status"] == "CRITICAL"
    reports = {r["account_id"]: r for r in cycle["reports"]}
    assert {a: r["status"] for a, r in reports.items()} == EXPECTED
    assert reports["cb-desk2"]["error"]["kind"] == "unavailable"
    assert reports["cb-desk2"]["exchange_balances"] == {}
    (missing,) = reports["dydx-1"]["discrepancies"]
    assert (missing["asset"], missing["missing_from"], missing["value_usd"]) == (
        "BTC/USD:USDC",
        "local",
        "30000",
    )
    assert "cycle finished" in run.stderr

    # Both reads at once: the store serves concurrent readers (and the test stays fast).
    readers = [_start(tmp_path, "history", "--json"), _start(tmp_path, "history", "--csv")]
    history, table = (_finish(reader) for reader in readers)

    assert history.returncode == 0, history.stderr
    newest_first = sorted(cycle["reports"], key=lambda r: r["reconciled_at"], reverse=True)
    assert json.loads(history.stdout) == newest_first
    assert table.returncode == 0, table.stderr
    rows = list(csv.reader(io.StringIO(table.stdout)))
    assert tuple(rows[0]) == HISTORY_COLUMNS
    assert len(rows) == len(EXPECTED) + 1  # header + one row per account
    assert [row[3] for row in rows[1:]] == [r["account_id"] for r in newest_first]
