"""kombu's Redis transport, with one fix: a worker survives a Redis restart mid-task.

With celery 5.7.0 and kombu 5.7.0, when the broker connection drops while a worker holds an
unacknowledged (acks-late) task, the consumer's recovery calls ``Connection.collect()`` —
which detaches the transport from its connection (``transport.client = None``) — and then
``Connection.close()``. Closing the channel restores the unacknowledged messages through a
new Redis client whose parameters are read from ``transport.client``: ``None.hostname``, an
``AttributeError`` that no connection-error handler catches, and the worker exits
("Unrecoverable error"). Measured: every worker running a task died at each restart
(``tests/integration/test_faults.py``).

Here the restore is skipped when the connection is already gone, and a channel whose
connection is gone answers any further use (the in-flight task's late ack) with a Redis
connection error, which kombu logs ("Couldn't ack") instead of stopping the worker: the
messages stay where the transport put them when it delivered them (Redis's unacked set) and
are restored by the visibility-timeout sweep (``RECONCILIATION_REDELIVERY_SECONDS``) of
whichever consumer runs it — redelivered, never lost; recon's tasks are idempotent, so one
that then runs twice writes nothing twice. Selected with ``broker_transport``
(``celeryconfig.py``) for ``redis://`` and ``rediss://`` brokers.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> Any:
        if self.channel.connection.client is None:  # collect() detached the transport
            delivered = self._delivered
            log.warning(
                "broker connection lost with %d unacknowledged message(s): left to the "
                "redelivery sweep",
                0 if delivered is None else len(delivered),
            )
            if delivered is not None:
                delivered.clear()
            return None
        return super().restore_unacked(client)


class Channel(kombu_redis.Channel):
    QoS = QoS

    def _connparams(self, asynchronous: bool = False) -> Any:
        # A channel closed with its connection (the in-flight task's ack comes later): a
        # connection error, which kombu and Celery handle ("Couldn't ack"; the message is
        # then redelivered by the sweep), not an AttributeError that stops the worker.
        transport: Any = self.connection  # None once the channel is closed
        if transport is None or transport.client is None:
            raise RedisConnectionError("the broker connection of this channel is closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]


class Transport(kombu_redis.Transport):
    Channel = Channel


__all__ = ["Transport"]
