"""Worker logging: recon's format and level, and no balance in Celery's own lines.

Celery logs every task's return value on success ("Task … succeeded in …s: <result>"); recon's
results hold balances, so that value is replaced before any handler sees it. Arguments are
never logged by Celery 5.7's "received" line, and recon's tasks take ids, not amounts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from celery import signals

from app import bootstrap
from infra.config import load_settings

REDACTED: Final = "<result not logged: it may hold balances>"
_TRACE_LOGGER: Final = "celery.app.trace"


class RedactTaskResults(logging.Filter):
    """Drops the return value (and the ``data`` extra carrying it) from Celery's trace lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, Mapping) and "return_value" in args:
            record.args = {**args, "return_value": REDACTED}
        data = getattr(record, "data", None)
        if isinstance(data, Mapping) and "return_value" in data:
            record.data = {**data, "return_value": REDACTED}
        return True


def install_redaction() -> None:
    """Attach the filter to Celery's trace logger (idempotent)."""
    logger = logging.getLogger(_TRACE_LOGGER)
    if not any(isinstance(f, RedactTaskResults) for f in logger.filters):
        logger.addFilter(RedactTaskResults())


@signals.setup_logging.connect
def _configure_worker_logging(**_: Any) -> None:
    """Replaces Celery's own logging set-up in worker and beat processes."""
    bootstrap.configure_logging(load_settings())
    install_redaction()
