"""Faults made with real processes and sockets, for the fault-injection tests.

:class:`PrivateRedis` is a ``redis-server`` of the test's own, on a free loopback port, that the
test may stop and start again on the same port (the machine's shared Redis on 6379 is never
stopped). It runs with the append-only file on (``--appendonly yes --appendfsync always``) in
the test's folder, as production's Redis does (``docker-compose.yml``): a restart keeps the
queued and unacknowledged messages and the stored results. Without ``redis-server`` on the
PATH its tests skip, except on CI (``CI=true``), where they fail.

:class:`TcpProxy` forwards a loopback port to another address (the PostgreSQL server) and can
be cut: every open connection is reset and new ones are refused, until it is restored on the
same port.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import struct
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

import pytest
import redis

from bench.harness import death_signal_prefix
from tests.integration.workers_harness import STOP_TIMEOUT, free_port, unavailable, wait_for

#: How long a private Redis may take to answer PING after it is started (seconds).
REDIS_START_TIMEOUT: Final = 15.0
#: How often the proxy's accept loop looks whether it was cut (seconds).
_ACCEPT_POLL_SECONDS: Final = 0.05
_CHUNK: Final = 65536


def redis_server_binary() -> str:
    """The ``redis-server`` command on the PATH (skip, or fail on CI, without one)."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server is not on the PATH: the private Redis cannot be started")
    return binary


class PrivateRedis:
    """A ``redis-server`` on ``127.0.0.1:<free port>`` with its data and log in ``folder``.

    :meth:`stop` is Redis's own clean shutdown (SIGTERM: the append-only file is flushed, the
    clients' connections are closed); :meth:`start` brings it back on the same port, and it
    reloads the append-only file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.log_path = folder / "redis-server.log"
        self.binary = redis_server_binary()
        self.starts = 0
        self._popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def url(self, database: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def ping(self) -> bool:
        """Whether the server answers PING right now."""
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self) -> None:
        """Start the server (again) on its port and wait until it answers PING."""
        if self.alive():
            raise RuntimeError("the private Redis is already running")
        if self._log is None:
            self._log = self.log_path.open("ab")
        command = [
            *death_signal_prefix(),
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.folder),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--protected-mode",
            "no",
        ]
        self._popen = subprocess.Popen(
            command,
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1

        def answers() -> bool:
            if not self.alive():
                pytest.fail(f"redis-server exited at start:\n{self.tail()}")
            return self.ping()

        wait_for(answers, timeout=REDIS_START_TIMEOUT, what="the private Redis to answer PING")

    def stop(self) -> int:
        """SIGTERM (clean shutdown) and wait; the exit status."""
        popen = self._popen
        if popen is None:
            raise RuntimeError("the private Redis was never started")
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
        try:
            return popen.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=STOP_TIMEOUT)
            pytest.fail("redis-server did not stop on SIGTERM")

    def close(self) -> None:
        try:
            if self.alive():
                self.stop()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a reset (RST), waking any thread blocked on it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """``127.0.0.1:<port>`` forwarded to ``target``, one pair of pump threads per connection.

    :meth:`cut` resets every open connection and stops listening (a new connection is
    refused); :meth:`restore` listens again on the same port. :attr:`accepted` counts the
    connections forwarded so far.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.accepted = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stop = threading.Event()

    def __enter__(self) -> Self:
        self.restore()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cut()

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def restore(self) -> None:
        """Listen (again) on the proxy's port and forward every new connection."""
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(_ACCEPT_POLL_SECONDS)
        self._stop = threading.Event()
        self._listener = listener
        self._acceptor = threading.Thread(
            target=self._accept_loop, args=(listener, self._stop), daemon=True
        )
        self._acceptor.start()

    def cut(self) -> None:
        """Stop listening (connections are refused) and reset every open connection."""
        listener, acceptor = self._listener, self._acceptor
        self._listener = self._acceptor = None
        self._stop.set()
        if acceptor is not None:
            acceptor.join(timeout=5)
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            _reset(sock)

    def _accept_loop(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if stop.is_set():
                    _reset(client)
                    _reset(upstream)
                    return
                self._open.update((client, upstream))
                self.accepted += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(_CHUNK):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            # One side ended: end the other too, so the peer sees the connection go.
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _reset(source)
            _reset(sink)
