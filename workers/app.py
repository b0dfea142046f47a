"""The Celery app. Its configuration (``celeryconfig``) is read from the environment when a
worker, beat or Flower starts; creating the app object connects nothing."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from infra.config import load_settings
from workers import logs, memory
from workers.runtime import close_runtime, forget_runtime, serve_metrics

app = Celery("recon", include=["workers.tasks"])
app.config_from_object("celeryconfig")


@signals.worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    """Each worker serves its Prometheus metrics (the threads pool runs tasks in-process)."""
    serve_metrics(load_settings().metrics_port)


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    """A prefork child must not reuse the parent's sockets: build its own adapters."""
    forget_runtime()


@signals.worker_shutdown.connect
def _close(**_: Any) -> None:
    close_runtime()


__all__ = ["app", "logs", "memory"]
