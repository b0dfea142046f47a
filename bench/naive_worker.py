"""The Celery app of the naive baseline's workers: :mod:`bench.worker` with recon's pacing
taken out, so that the baseline is the design recon improves on: one task per account (the
bench sets ``RECONCILIATION_FETCH_BATCH_SIZE=1``), the confirming second look as well (a
second chord, never the join's own fetches), on the default prefork pool, every request sent
as soon as a worker gets to it, 429s and their Retry-After left to the retries.

Started as ``celery -A bench.naive_worker worker --pool prefork`` (see :mod:`bench.run`).
"""

from __future__ import annotations

from app import bootstrap
from bench.worker import app
from infra.config import Settings
from infra.venues.pacing import RateLimit
from workers import tasks


class NoPacing:
    """A rate budget that never makes a request wait."""

    def reserve(self, scope: str, limit: RateLimit) -> float:
        return 0.0


def _no_pacing(settings: Settings) -> NoPacing:
    return NoPacing()


# The composition root builds every adapter when the worker's first task needs them (nothing at
# import time), so replacing its budget factory here reaches every venue client of the process.
bootstrap.build_rate_budget = _no_pacing
# The second look too is one task per account (a second chord), not the join's own fetches.
tasks.CONFIRM_IN_JOIN = False

__all__ = ["app"]
