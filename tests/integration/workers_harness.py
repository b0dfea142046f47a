"""Real Celery processes for the integration tests: workers, beat and Flower, by hand.

Each process is the installed ``celery`` command (``celery -A workers …``) started with its own
environment, its standard output and error in ``<name>.log`` of the test's folder. A
:class:`CeleryStack` owns a test's processes: it starts them, waits until they are ready (the
worker's ``<node> ready.`` line, beat's ``Starting...``, Flower's ``/healthcheck``), and stops
every one still running when the test ends (SIGTERM, then SIGKILL), so a failing test leaks
nothing. Where util-linux's ``setpriv`` exists, each process also dies with the test process
(parent-death signal), so not even a killed pytest leaves a worker stealing later tests' tasks.

Redis: :func:`redis_database_fixture` claims, for the whole session, a database number 1..15 that
is empty and that no client is connected to, and :func:`redis_url_fixture` empties it before
each test. As with PostgreSQL (``tests/conftest.py``), an unreachable server skips the tests,
except on CI (``CI=true``), where it fails them.

Test modules get the fixtures by importing them::

    from tests.integration.workers_harness import (  # noqa: F401  (fixtures)
        audit_database_fixture,
        redis_database_fixture,
        redis_url_fixture,
    )
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, NoReturn, Self, TypeVar

import pytest
from celery import Celery
from sqlalchemy import create_engine, text

from bench.harness import (
    BenchError,
    RedisDatabase,
    ServiceUnavailable,
    claim_redis_database,
    close_client,
    death_signal_prefix,
)
from bench.harness import client_app as bench_client_app
from infra.db.migrate import upgrade
from tests.support import Desk, clean_environ

#: Set in the claimed database so that a concurrent session picks another one.
CLAIM_KEY: Final = "recon:tests:claimed-by"
CLAIM_SECONDS: Final = 3600
#: How long a process may take to become ready / to stop on SIGTERM (seconds).
READY_TIMEOUT: Final = 40.0
STOP_TIMEOUT: Final = 30.0
#: How long a test waits for a task's result (seconds).
RESULT_TIMEOUT: Final = 45.0
POLL_SECONDS: Final = 0.05

T = TypeVar("T")


# --- Redis --------------------------------------------------------------------------------------


def unavailable(message: str) -> NoReturn:
    """Skip the test, or fail it on CI (``CI=true``): CI must not pass by skipping."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@functools.cache
def _claim_database() -> RedisDatabase:
    """An empty database number 1..15 with no client connected to it, claimed (once per run)
    as the bench claims its own (:func:`bench.harness.claim_redis_database`)."""
    try:
        return claim_redis_database(claim_key=CLAIM_KEY, claim_seconds=CLAIM_SECONDS)
    except ServiceUnavailable as error:
        unavailable(str(error))
    except BenchError as error:
        pytest.fail(str(error))


@pytest.fixture(name="redis_database", scope="session")
def redis_database_fixture() -> Iterator[RedisDatabase]:
    """The Redis database this session owns; emptied when the session ends."""
    database = _claim_database()
    yield database
    database.release()


@pytest.fixture(name="redis_url")
def redis_url_fixture(redis_database: RedisDatabase) -> str:
    """The URL of the session's Redis database, emptied for this test."""
    redis_database.flush()
    return redis_database.url


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture(name="audit_database")
def audit_database_fixture(postgres_url: Callable[[], str]) -> str:
    """A throwaway PostgreSQL database of this test, migrated to head."""
    url = postgres_url()
    upgrade(url)
    return url


def _select(database_url: str, query: str) -> list[dict[str, Any]]:
    """The rows of ``query`` on the audit store at ``database_url``, as dicts."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(text(query))]
    finally:
        engine.dispose()


def recovery_columns(database_url: str) -> dict[str, str]:
    """``account_id → recovery_status`` of the audit rows whose break was looked at again."""
    rows = _select(
        database_url,
        "SELECT account_id, recovery_status FROM reconciliation_audit WHERE recovery_attempted",
    )
    return {row["account_id"]: row["recovery_status"] for row in rows}


def audit_rows(database_url: str) -> list[dict[str, Any]]:
    """Every audit row (account, cycle, report id, venue, status, error), oldest first."""
    rows = _select(
        database_url,
        "SELECT account_id, cycle_id, reconciliation_id, exchange_id, status,"
        " error_json FROM reconciliation_audit ORDER BY id",
    )
    for row in rows:
        if isinstance(row["error_json"], str):
            row["error_json"] = json.loads(row["error_json"])
    return rows


# --- waiting ------------------------------------------------------------------------------------


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = POLL_SECONDS
) -> T:
    """Poll ``probe`` until it returns a true value, and return that; fail after ``timeout``
    seconds saying ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def http_get(url: str, *, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of ``GET url`` (loopback only); (0, b"") when nothing answers."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("the tests only speak to loopback")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        with contextlib.closing(error):
            return int(error.code), bytes(error.read())
    except OSError:
        return 0, b""


# --- processes ----------------------------------------------------------------------------------


def celery_script() -> Path:
    """The installed ``celery`` command of the running interpreter's environment."""
    script = Path(sys.executable).parent / "celery"
    if not script.is_file():
        pytest.fail(f"{script} is missing: install the project (pip install -e '.[dev]') first")
    return script


class CeleryProcess:
    """One ``celery -A workers …`` process, its output in ``<folder>/<name>.log``."""

    def __init__(
        self, name: str, args: Sequence[str], env: Mapping[str, str], folder: Path
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = folder / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(
                [*death_signal_prefix(), str(celery_script()), "-A", "workers", *self.args],
                env=dict(env),
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the terminal's Ctrl-C reaches pytest, not these
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def count(self, needle: str) -> int:
        """How many times ``needle`` occurs in the log."""
        return self.log().count(needle)

    def wait_for_log(self, needle: str, *, timeout: float = READY_TIMEOUT) -> None:
        """Wait until ``needle`` appears in the log; fail (with the log's tail) if the process
        exits first or the time runs out."""

        deadline = time.monotonic() + timeout
        while needle not in self.log():
            if not self.alive():
                pytest.fail(
                    f"{self.name} exited with {self.returncode} before logging {needle!r}:\n"
                    + self.tail()
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{self.name} did not log {needle!r} in {timeout:.0f} s:\n{self.tail()}"
                )
            time.sleep(POLL_SECONDS)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def kill(self) -> int:
        """SIGKILL (no shutdown at all) and reap; the exit status (-9)."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
        return self.popen.wait(timeout=STOP_TIMEOUT)

    def terminate(self, *, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM (Celery's warm shutdown) and wait; the exit status. A process still running
        after ``timeout`` is killed and the test fails."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"{self.name} did not stop within {timeout:.0f} s of SIGTERM")

    def close(self) -> None:
        """Make sure the process is gone, then close its log file."""
        try:
            if self.alive():
                self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.kill()
        finally:
            self._log.close()


def process_environment(
    desk: Desk, *, database_url: str, redis_url: str, **overrides: str
) -> dict[str, str]:
    """The variables of every process of a test: the desk's roster and book, the test's
    PostgreSQL database and Redis database, no metrics endpoint (several workers share the
    host), no confirming re-fetch delay; ``overrides`` last."""
    variables = desk.env(
        RECONCILIATION_DATABASE_URL=database_url,
        RECONCILIATION_BROKER_URL=redis_url,
        RECONCILIATION_RESULT_BACKEND=redis_url,
        RECONCILIATION_METRICS_PORT="0",
        RECONCILIATION_CONFIRM_DELAY_SECONDS="0",
        RECONCILIATION_LOG_LEVEL="INFO",
    )
    variables.update(overrides)
    return clean_environ(PYTHONUNBUFFERED="1", **variables)


def client_app(redis_url: str) -> Celery:
    """A bare Celery client of the test's Redis (JSON only, like every recon peer); close it
    with :func:`close_client`."""
    return bench_client_app(redis_url, name="recon-tests")


class CeleryStack:
    """A test's Celery processes and its client, all stopped when the block ends."""

    def __init__(self, folder: Path, env: Mapping[str, str], redis_url: str) -> None:
        self.folder = folder
        self.env = dict(env)
        self.processes: dict[str, CeleryProcess] = {}
        self.client = client_app(redis_url)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            for process in self.processes.values():
                process.close()
        finally:
            close_client(self.client)

    def _start(self, name: str, args: Sequence[str], **env: str) -> CeleryProcess:
        if name in self.processes:
            raise ValueError(f"a process named {name!r} already runs in this stack")
        process = CeleryProcess(name, args, {**self.env, **env}, self.folder)
        self.processes[name] = process
        return process

    @staticmethod
    def node_name(name: str) -> str:
        """The Celery node name of worker ``name`` (``-n name@%h``)."""
        return f"{name}@{socket.gethostname()}"

    def start_worker(
        self, name: str, *, concurrency: int = 8, env: Mapping[str, str] | None = None
    ) -> CeleryProcess:
        """``celery -A workers worker --pool threads --concurrency N -n name@%h`` (not awaited)."""
        args = ["worker", "--pool", "threads", "--concurrency", str(concurrency)]
        return self._start(name, [*args, "-n", f"{name}@%h"], **(env or {}))

    def workers(self, *names: str) -> list[CeleryProcess]:
        """Start the workers ``names`` side by side and wait until each is ready."""
        started = [self.start_worker(name) for name in names]
        for process in started:
            self.wait_ready(process)
        return started

    def start_beat(self, **env: str) -> CeleryProcess:
        """``celery -A workers beat`` with its schedule file in the test's folder."""
        schedule = self.folder / "beat-schedule"
        return self._start("beat", ["beat", "--schedule", str(schedule)], **env)

    def start_flower(self, port: int, **env: str) -> CeleryProcess:
        """``celery -A workers flower`` on 127.0.0.1:``port`` (its API open on loopback)."""
        args = ["flower", f"--port={port}", "--address=127.0.0.1"]
        return self._start("flower", args, FLOWER_UNAUTHENTICATED_API="true", **env)

    def wait_ready(self, process: CeleryProcess) -> None:
        """Wait until ``process`` serves: a worker's ``ready.`` line, beat's start line."""
        if process.args[0] == "worker":
            process.wait_for_log(f"{self.node_name(process.name)} ready.")
        elif process.args[0] == "beat":
            process.wait_for_log("beat: Starting...")
        else:
            raise ValueError(f"no readiness rule for {process.args[0]!r}; use wait_for")

    def active_tasks(self, *, timeout: float = 1.0) -> dict[str, list[dict[str, Any]]]:
        """``celery inspect active``: the tasks each worker is running, by node name."""
        replies: Any = self.client.control.inspect(timeout=timeout).active()
        return dict(replies or {})
