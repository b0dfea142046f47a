"""Celery's configuration, derived from recon's one settings object (``RECONCILIATION_*``).

The worker app loads this module lazily (``config_from_object("celeryconfig")``), so the
environment is read when a worker, beat or Flower starts, not when ``workers`` is imported.
:func:`options` is the pure mapping from settings to Celery settings, used by tests and by the
embedded default.

Celery reads each setting as an attribute of this module, so no module-level name may be a
Celery setting's name (a function called ``beat_schedule`` would hide the schedule from beat).
"""

from __future__ import annotations

import functools
from typing import Any, Final

from infra.config import Settings, load_settings

#: The embedded default: an in-process broker and result store (``recon up``).
EMBEDDED_BROKER: Final = "memory://"
EMBEDDED_BACKEND: Final = "cache+memory://"
#: The queue other services reach with a bare ``send_task(name, kwargs=…)``.
DEFAULT_QUEUE: Final = "celery"
#: Seconds between a worker's sweeps for unacknowledged messages past the redelivery timeout
#: (``RECONCILIATION_REDELIVERY_SECONDS``). Every sweep scans (throttle 1): kombu's default
#: scans on every 10th sweep only, which would add up to 50 s to a lost task's redelivery.
RESTORE_SWEEP_SECONDS: Final = 5


def tick_schedule(settings: Settings) -> dict[str, Any]:
    """The tick, every ``RECONCILIATION_INTERVAL_SECONDS``; a tick not started before the
    next one is due expires instead of piling up."""
    interval = float(settings.interval_seconds)
    return {
        "recon-tick": {
            "task": "recon.tick",
            "schedule": interval,
            "options": {"expires": max(1.0, interval * 0.9)},
        }
    }


#: The transport class of Redis brokers (see :mod:`workers.redis_transport`).
REDIS_TRANSPORT: Final = "workers.redis_transport:Transport"


def options(settings: Settings) -> dict[str, Any]:
    """Every Celery setting recon uses."""
    broker = settings.broker_url or EMBEDDED_BROKER
    backend = settings.effective_result_backend or (
        EMBEDDED_BACKEND if broker == EMBEDDED_BROKER else broker
    )
    embedded = broker.startswith("memory://")
    transport: dict[str, Any] = (
        {"polling_interval": 0.01}
        if embedded
        else {
            "visibility_timeout": float(settings.redelivery_seconds),
            "unacked_restore_interval": RESTORE_SWEEP_SECONDS,
            "unacked_restore_throttle": 1,
        }
    )
    redis_broker = broker.startswith(("redis://", "rediss://"))
    return {
        "broker_url": broker,
        # kombu's Redis transport with the one fix of workers/redis_transport.py (a worker
        # survives a Redis restart mid-task); any other broker keeps its own transport.
        "broker_transport": REDIS_TRANSPORT if redis_broker else None,
        "result_backend": backend,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport,
        # JSON only, both ways: no pickle ever reaches a worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # A task is acknowledged when it finishes; a worker lost mid-task (SIGKILL, OOM)
        # hands the task back to the queue. Every task is idempotent for it.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": DEFAULT_QUEUE,
        "task_track_started": True,
        "result_extended": True,  # Flower and AsyncResult show task names and arguments
        "result_expires": 24 * 3600,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": tick_schedule(settings),
    }


@functools.cache
def _from_environment() -> dict[str, Any]:
    return options(load_settings())


def __getattr__(name: str) -> Any:
    """Module attributes for ``config_from_object``, built from the environment on first read."""
    values = _from_environment()
    if name in values:
        return values[name]
    raise AttributeError(name)


def __dir__() -> list[str]:
    return sorted(_from_environment())
