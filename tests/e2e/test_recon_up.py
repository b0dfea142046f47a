"""``recon up``: worker, beat and sandbox in one process on the embedded default.

The console script runs in a subprocess with a clean environment in an empty folder: no
Redis, no Postgres. It must print one line per cycle (the same tick → chord → join code as the
production workers), write the cycles' audit rows to ``recon.db``, and stop cleanly on Ctrl-C.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.test_fresh_run import EXPECTED, _sandbox_port_usable  # noqa: F401 - fixture
from tests.support import recon_script

CYCLE_LINE = re.compile(r"^\S+Z cycle (?P<cycle>[0-9a-f-]{36}) (?P<status>[A-Z]+): (?P<rest>.*)$")


def _read_lines(process: subprocess.Popen[str], count: int, deadline: float) -> list[str]:
    """The first ``count`` cycle lines of ``process``'s stdout, within ``deadline``."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    lines: list[str] = []
    while len(lines) < count and time.monotonic() < deadline:
        if selector.select(timeout=0.5):
            line = process.stdout.readline()
            if not line:
                break
            if CYCLE_LINE.match(line.strip()):
                lines.append(line.strip())
    return lines


@pytest.mark.slow
def test_recon_up_runs_cycles_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """Two ticks land as two cycle lines naming every account's status; SIGINT exits 0."""
    environ = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(tmp_path),
        "LC_ALL": "C.UTF-8",
        "RECONCILIATION_INTERVAL_SECONDS": "2",
        "RECONCILIATION_CONFIRM_DELAY_SECONDS": "0.5",
        "RECONCILIATION_METRICS_PORT": "0",
    }
    process = subprocess.Popen(
        [str(recon_script()), "up"],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _read_lines(process, 2, time.monotonic() + 90)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
    assert len(lines) == 2, stderr[-3000:]
    for line in lines:
        match = CYCLE_LINE.match(line)
        assert match is not None
        assert match["status"] == "CRITICAL"
        statuses = dict(pair.split("=") for pair in match["rest"].split())
        assert statuses == EXPECTED
    assert process.returncode == 0, stderr[-3000:]
    cycles = {m["cycle"] for m in map(CYCLE_LINE.match, lines) if m is not None}
    with sqlite3.connect(tmp_path / "recon.db") as db:
        rows = db.execute(
            "SELECT cycle_id, account_id FROM reconciliation_audit ORDER BY id"
        ).fetchall()
    written = {(c, a) for c, a in rows if c in cycles}
    assert len(written) == 2 * len(EXPECTED)
    assert len(rows) == len(set(rows))  # no account twice in any cycle
    assert "Traceback" not in stderr
