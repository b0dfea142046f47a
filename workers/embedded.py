"""``recon up``: worker, beat and the sandbox venue in one process, on the embedded default.

No Redis and no Postgres: an in-memory broker and result store (so beat, worker and join must
share this process) and the SQLite audit file. The cycle is the very same tick → chord →
compare-and-report code the production workers run. Ctrl-C (or SIGTERM) stops it with
Celery's warm shutdown.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final, TextIO

from celery import signals
from celery.beat import EmbeddedService

import celeryconfig
from app import bootstrap
from workers import logs
from workers.app import app
from workers.runtime import close_runtime, get_runtime

log = logging.getLogger(__name__)

#: The tasks whose result is a finished cycle: the join, or the join of its confirmation.
CYCLE_ENDS: Final = frozenset({"recon.compare_and_report", "recon.confirm_breaks"})
#: Threads of the embedded worker: the chord's header tasks and the join run side by side.
EMBEDDED_CONCURRENCY: Final = 8


def cycle_line(result: object) -> str | None:
    """One line summarising a finished cycle (no amounts), or None for other results."""
    if not isinstance(result, dict) or "reports" not in result or "cycle_id" not in result:
        return None
    accounts = " ".join(f"{r['account_id']}={r['status']}" for r in result["reports"])
    skipped = result.get("skipped") or []
    tail = f" skipped(busy)={','.join(skipped)}" if skipped else ""
    return (
        f"{result.get('finished_at', '')} cycle {result['cycle_id']} {result['status']}: "
        f"{accounts}{tail}"
    )


@contextlib.contextmanager
def _print_cycles(out: TextIO) -> Iterator[None]:
    def on_success(sender: Any = None, result: Any = None, **_: Any) -> None:
        if getattr(sender, "name", None) not in CYCLE_ENDS:
            return
        line = cycle_line(result)
        if line is not None:
            print(line, file=out, flush=True)

    signals.task_success.connect(on_success, weak=False)
    try:
        yield
    finally:
        signals.task_success.disconnect(on_success)


def run(
    configuration: bootstrap.Configuration,
    *,
    out: TextIO = sys.stdout,
    ready: Callable[[], None] | None = None,
) -> None:
    """Run until interrupted. ``configuration`` must use the embedded broker."""
    settings = configuration.settings
    if settings.broker_url is not None:
        raise ValueError("recon up runs the embedded default: unset RECONCILIATION_BROKER_URL")
    app.conf.update(celeryconfig.options(settings))
    logs.install_redaction()
    get_runtime()  # configuration and audit schema problems surface before anything starts
    # An in-memory schedule (no celerybeat-schedule file); the first cycle starts at once.
    beat = EmbeddedService(app, thread=True, scheduler_cls="celery.beat:Scheduler")
    if not isinstance(beat, threading.Thread):  # thread=True always gives the threaded one
        raise TypeError("embedded beat must be a thread")
    with bootstrap.embedded_sandbox(configuration), _print_cycles(out):
        worker = app.Worker(
            pool="threads",
            concurrency=EMBEDDED_CONCURRENCY,
            loglevel=settings.log_level,
            without_mingle=True,
            without_gossip=True,
            without_heartbeat=True,
            quiet=True,
        )
        beat.start()
        try:
            app.send_task("recon.tick")
            if ready is not None:
                ready()
            worker.start()
        finally:
            beat.stop()
            close_runtime()
