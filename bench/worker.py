"""The Celery app of the bench's workers: recon's own app (``workers.app``), unchanged, with
one logger more verbose: ``infra.db.repository`` at DEBUG, so that each worker logs the
duration of every cycle's audit write (``audit write: cycle=… rows=… new=… encode_seconds=…
seconds=…``: encoding the rows, then the transaction) while everything else
logs at the configured level (``RECONCILIATION_LOG_LEVEL``; DEBUG everywhere would log every
HTTP request and slow the cycle it measures).

Started as ``celery -A bench.worker worker …`` (see :mod:`bench.harness`).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from workers.app import app


@signals.worker_init.connect
def _log_audit_write_time(**_: Any) -> None:
    logging.getLogger("infra.db.repository").setLevel(logging.DEBUG)


__all__ = ["app"]
