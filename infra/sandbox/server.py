"""Running the sandbox venue: :func:`serve` (blocking, for ``recon sandbox``) and
:class:`SandboxServer` (a background thread, for tests and the embedded default).

Both leave logging configuration to the caller (uvicorn's ``log_config`` is off) and log
nothing but addresses and request lines: never a balance.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import uvicorn

from infra.sandbox.app import DEFAULT_VENUES, create_app
from infra.sandbox.scenario import Scenario, load_scenario
from infra.sandbox.state import ConnectionResetFault, SandboxState, VenueModule

DATA_DIR: Final = Path(__file__).resolve().parent / "data"
DEFAULT_SCENARIO: Final = DATA_DIR / "scenario.toml"
DEFAULT_ROSTER: Final = DATA_DIR / "roster.toml"
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 9000
#: How long in-flight requests (a hanging ``timeout`` fault) may delay a shutdown.
GRACEFUL_SHUTDOWN_SECONDS: Final = 2

logger = logging.getLogger(__name__)


class _DropInjectedResets(logging.Filter):
    """Hides uvicorn's traceback for a deliberately reset connection (a scenario fault)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionResetFault))


_RESET_FILTER: Final = _DropInjectedResets()


def _uvicorn_config(app: object, *, host: str, port: int, access_log: bool) -> uvicorn.Config:
    error_logger = logging.getLogger("uvicorn.error")
    if _RESET_FILTER not in error_logger.filters:
        error_logger.addFilter(_RESET_FILTER)
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_config=None,
        access_log=access_log,
        lifespan="on",
        ws="none",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        server_header=False,
    )


def builtin_scenario_path() -> Path:
    """The built-in demo scenario (``data/scenario.toml``) that the built-in roster points at."""
    return DEFAULT_SCENARIO


def _scenario(scenario: Scenario | str | os.PathLike[str] | None) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    return load_scenario(Path(scenario) if scenario is not None else DEFAULT_SCENARIO)


def serve(
    scenario_path: str | os.PathLike[str] = DEFAULT_SCENARIO,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    access_log: bool = True,
    venues: Sequence[VenueModule] = DEFAULT_VENUES,
) -> None:
    """Serve the scenario at ``scenario_path`` until interrupted (SIGINT/SIGTERM)."""
    scenario = load_scenario(Path(scenario_path))
    state = SandboxState(scenario)
    config = _uvicorn_config(create_app(state, venues), host=host, port=port, access_log=access_log)
    logger.info(
        "sandbox venue serving %d account(s) from %s on http://%s:%d",
        len(scenario.accounts),
        scenario.source,
        host,
        port,
    )
    uvicorn.Server(config).run()


class SandboxServer:
    """The sandbox venue on a background thread::

        with SandboxServer(scenario_or_path, port=0) as server:
            httpx.get(server.base_url + "/v4/…")

    ``port=0`` picks a free ephemeral port. Entering returns once the server accepts
    connections; leaving stops it and waits for the thread. One start per instance.
    """

    def __init__(
        self,
        scenario: Scenario | str | os.PathLike[str] | None = None,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        venues: Sequence[VenueModule] = DEFAULT_VENUES,
        access_log: bool = False,
        start_timeout: float = 10.0,
    ) -> None:
        self.scenario = _scenario(scenario)
        self.state = SandboxState(self.scenario)
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._venues = tuple(venues)
        self._access_log = access_log
        self._start_timeout = start_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        """The port the server listens on (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("the sandbox server is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server, for a roster's ``base_url``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind, start serving on a daemon thread, and wait until connections are accepted."""
        if self._server is not None:
            raise RuntimeError("a SandboxServer starts once")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        self._port = sock.getsockname()[1]
        app = create_app(self.state, self._venues)
        config = _uvicorn_config(app, host=self.host, port=self._port, access_log=self._access_log)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"recon-sandbox-{self._port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        """Stop serving (in-flight hangs are woken) and wait for the thread to end."""
        if self._server is not None:
            self.state.request_shutdown()
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=GRACEFUL_SHUTDOWN_SECONDS + 10)
        if self._socket is not None:
            self._socket.close()

    def reset(self) -> None:
        """Fresh fault counters, rate-limit windows and request counts."""
        self.state.reset()

    def request_count(self, account_id: str) -> int:
        """How many requests reached ``account_id`` so far."""
        return self.state.request_count(account_id)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
