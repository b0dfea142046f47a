"""The Celery settings recon derives from its environment (celeryconfig.options)."""

from __future__ import annotations

import celeryconfig
from infra.config import load_settings


def test_json_only_both_ways() -> None:
    """No pickle: tasks, results and events are JSON, and only JSON is accepted."""
    options = celeryconfig.options(load_settings({}))
    assert options["task_serializer"] == "json"
    assert options["result_serializer"] == "json"
    assert options["accept_content"] == ["json"]
    assert options["result_accept_content"] == ["json"]


def test_late_acks_with_requeue_on_worker_loss() -> None:
    """A task is acknowledged after it ran; a lost worker's task goes back to the queue."""
    options = celeryconfig.options(load_settings({}))
    assert options["task_acks_late"] is True
    assert options["task_reject_on_worker_lost"] is True
    assert options["worker_prefetch_multiplier"] == 1


def test_beat_ticks_every_interval_and_each_tick_expires_before_the_next() -> None:
    """The schedule is data: recon.tick every RECONCILIATION_INTERVAL_SECONDS, with expires."""
    options = celeryconfig.options(load_settings({"RECONCILIATION_INTERVAL_SECONDS": "30"}))
    (entry,) = options["beat_schedule"].values()
    assert entry["task"] == "recon.tick"
    assert entry["schedule"] == 30.0
    assert 0 < entry["options"]["expires"] < 30


def test_embedded_default_needs_no_server() -> None:
    """Without a broker URL: in-memory broker and result store, fast polling."""
    options = celeryconfig.options(load_settings({}))
    assert options["broker_url"] == "memory://"
    assert options["result_backend"] == "cache+memory://"
    assert options["broker_transport_options"]["polling_interval"] < 0.1


def test_result_backend_follows_the_broker_unless_set() -> None:
    """RECONCILIATION_RESULT_BACKEND defaults to the broker; Redis gets a redelivery timeout."""
    follows = celeryconfig.options(
        load_settings({"RECONCILIATION_BROKER_URL": "redis://127.0.0.1:6379/3"})
    )
    assert follows["result_backend"] == "redis://127.0.0.1:6379/3"
    assert follows["broker_transport_options"]["visibility_timeout"] > 0
    split = celeryconfig.options(
        load_settings(
            {
                "RECONCILIATION_BROKER_URL": "redis://127.0.0.1:6379/3",
                "RECONCILIATION_RESULT_BACKEND": "redis://127.0.0.1:6379/4",
            }
        )
    )
    assert split["result_backend"] == "redis://127.0.0.1:6379/4"


def test_default_queue_is_celerys_so_bare_send_task_reaches_recon() -> None:
    """Other services' send_task(name) lands on the queue the workers consume."""
    assert celeryconfig.options(load_settings({}))["task_default_queue"] == "celery"
