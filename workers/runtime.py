"""The adapters of one worker process, built on first use (never at import, never shared
across a fork): venue clients, book, prices, audit store, locks."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

from app import bootstrap
from app.cycle import AccountPlan, CycleContext
from infra.config import ConfigError
from infra.locks import AccountLocks, LocalAccountLocks, RedisAccountLocks
from infra.metrics.prometheus import CycleMetrics

log = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    """Everything a task needs, for the accounts of the configured roster."""

    configuration: bootstrap.Configuration
    plans: dict[str, AccountPlan]
    context: CycleContext
    locks: AccountLocks
    resources: ExitStack

    def plans_for(self, account_ids: Sequence[str]) -> list[AccountPlan]:
        """The plans of ``account_ids``, in that order; KeyError names an unknown account."""
        return [self.plans[a] for a in account_ids]

    def close(self) -> None:
        self.resources.close()


_lock = threading.Lock()
_runtime: WorkerRuntime | None = None
_local_locks = LocalAccountLocks()
_metrics: CycleMetrics | None = None


def process_metrics() -> CycleMetrics:
    """This process's metrics registry (created on first use)."""
    global _metrics  # noqa: PLW0603 - one registry per process, by design
    if _metrics is None:
        _metrics = CycleMetrics()
    return _metrics


def serve_metrics(port: int) -> None:
    """Serve this process's metrics on ``port``; a port in use is logged, not fatal."""
    if port == 0:
        return
    try:
        process_metrics().serve(port)
    except OSError as error:
        log.warning("metrics not served: port %d: %s", port, error.strerror)


def build_worker_runtime() -> WorkerRuntime:
    """Load the configuration and build every adapter (ConfigError names any problem)."""
    configuration = bootstrap.load_configuration(os.environ)
    runtime = bootstrap.build_runtime(
        configuration,
        configuration.roster.accounts,
        os.environ,
        observers=(process_metrics().observe,),
        check_audit_now=False,  # a fetch needs no database; the joins retry until it is back
    )
    resources = ExitStack()
    resources.push(runtime)
    broker = configuration.settings.broker_url
    locks: AccountLocks
    if broker is not None and broker.startswith(("redis://", "rediss://")):
        redis_locks = RedisAccountLocks.from_url(broker)
        resources.callback(redis_locks.close)
        locks = redis_locks
    else:
        locks = _local_locks  # the embedded default: beat, worker and join share one process
    plans = {plan.account_id: plan for plan in runtime.plans}
    return WorkerRuntime(configuration, plans, runtime.context, locks, resources)


def get_runtime() -> WorkerRuntime:
    """This process's runtime, built once."""
    global _runtime  # noqa: PLW0603 - one runtime per process, by design
    with _lock:
        if _runtime is None:
            try:
                _runtime = build_worker_runtime()
            except ConfigError:
                log.exception("configuration refused; the task cannot run")
                raise
        return _runtime


def forget_runtime() -> None:
    """Drop (without closing) a runtime inherited through fork: its sockets are the parent's."""
    global _runtime  # noqa: PLW0603
    with _lock:
        _runtime = None


def close_runtime() -> None:
    """Close this process's runtime (worker shutdown)."""
    global _runtime  # noqa: PLW0603
    with _lock:
        if _runtime is not None:
            _runtime.close()
            _runtime = None
