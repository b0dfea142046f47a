"""The bench's processes and services: Redis, PostgreSQL, sandbox endpoints, Celery workers.

- :func:`claim_redis_database`: a database number 1..15 of the Redis server on 127.0.0.1:6379
  that holds no key and that no client uses, claimed with a key (``recon:bench:claimed-by``) so
  a concurrent bench or test session picks another; flushed between runs and at the end.
- :func:`create_postgres_database`: a throwaway ``recon_bench_<hex>`` on 127.0.0.1:5432 (trust,
  as ``postgres`` or the current user), migrated with :func:`infra.db.migrate.upgrade`,
  dropped at the end.
- :class:`Sandboxes`: one :class:`~infra.sandbox.SandboxServer` per venue endpoint, in this
  process, each on its own ephemeral loopback port.
- :class:`WorkerProcess`: one ``celery -A bench.worker worker`` process (recon's own app, see
  :mod:`bench.worker`), its output in ``<name>.log``, dying with the bench where util-linux's
  ``setpriv`` exists; stopped with SIGTERM, then SIGKILL. Only processes started here are
  ever signalled, by their pid.
- :func:`client_app` / :func:`run_reconcile_all`: a plain Celery client that enqueues
  ``recon.reconcile_all`` by name and waits for the cycle.

An unreachable Redis or PostgreSQL raises :class:`ServiceUnavailable`.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

import kombu.pools
import psycopg
import redis
from celery import Celery
from psycopg import sql
from psycopg.conninfo import make_conninfo

from infra.db.migrate import upgrade
from infra.sandbox import SandboxServer

REDIS_HOST: Final = "127.0.0.1"
REDIS_PORT: Final = 6379
POSTGRES_HOST: Final = "127.0.0.1"
POSTGRES_PORT: Final = 5432
CLAIM_KEY: Final = "recon:bench:claimed-by"
CLAIM_SECONDS: Final = 6 * 3600
READY_TIMEOUT: Final = 60.0
STOP_TIMEOUT: Final = 30.0
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
#: The worker's DEBUG line after the cycle's audit write (``AuditRepository.record_cycle``).
_AUDIT_LINE: Final = re.compile(
    r"audit write: cycle=(?P<cycle>\S+) rows=\d+ new=\d+"
    r" encode_seconds=(?P<e>[\d.]+) seconds=(?P<s>[\d.]+)"
)


class ServiceUnavailable(RuntimeError):
    """Redis or PostgreSQL is not reachable on loopback."""


class BenchError(RuntimeError):
    """A bench run could not complete (a worker died, a cycle timed out)."""


# --- Redis --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisDatabase:
    """One Redis database number, claimed (by the bench, or by a test session: its own
    ``claim_key``) so that a concurrent user of the server picks another one."""

    number: int
    token: str
    claim_key: str = CLAIM_KEY
    claim_seconds: int = CLAIM_SECONDS

    @property
    def url(self) -> str:
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.number}"

    def connect(self) -> redis.Redis:
        """A client of this database (close it)."""
        return redis.Redis(
            host=REDIS_HOST, port=REDIS_PORT, db=self.number, socket_connect_timeout=3
        )

    def flush(self) -> None:
        """Empty the database, keeping the claim."""
        with contextlib.closing(self.connect()) as client:
            client.flushdb()
            client.set(self.claim_key, self.token, ex=self.claim_seconds)

    def release(self) -> None:
        """Empty the database (claim included)."""
        with contextlib.closing(self.connect()) as client:
            client.flushdb()


def check_redis() -> None:
    """Raise :class:`ServiceUnavailable` unless the Redis server answers."""
    with contextlib.closing(
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=3)
    ) as client:
        try:
            client.ping()
        except redis.RedisError as exc:
            raise ServiceUnavailable(
                f"Redis not reachable at {REDIS_HOST}:{REDIS_PORT}: {exc}"
            ) from None


def claim_redis_database(
    *, claim_key: str = CLAIM_KEY, claim_seconds: int = CLAIM_SECONDS
) -> RedisDatabase:
    """An empty database number 1..15 that no client uses, claimed under ``claim_key``.

    Raises :class:`ServiceUnavailable` (no Redis) or :class:`BenchError` (none free)."""
    check_redis()
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    with contextlib.closing(
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=3)
    ) as admin:
        in_use = {int(c.get("db", 0)) for c in admin.client_list()}
    for number in range(1, 16):
        if number in in_use:
            continue
        with contextlib.closing(
            redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number, socket_connect_timeout=3)
        ) as client:
            if client.dbsize() == 0 and client.set(claim_key, token, nx=True, ex=claim_seconds):
                return RedisDatabase(number, token, claim_key, claim_seconds)
    raise BenchError("no free Redis database among 1..15 (each holds keys or has clients)")


# --- PostgreSQL ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PostgresDatabase:
    """A throwaway database of this bench."""

    name: str
    user: str
    admin_conninfo: str

    @property
    def url(self) -> str:
        """The SQLAlchemy URL recon's workers use."""
        return f"postgresql+psycopg://{self.user}@{POSTGRES_HOST}:{POSTGRES_PORT}/{self.name}"

    def count_rows(self) -> int:
        """How many audit rows the database holds."""
        conninfo = make_conninfo(self.admin_conninfo, dbname=self.name)
        with psycopg.connect(conninfo) as conn:
            row = conn.execute("SELECT count(*) FROM reconciliation_audit").fetchone()
        return int(row[0]) if row is not None else 0

    def drop(self) -> None:
        with psycopg.connect(self.admin_conninfo, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )


def postgres_admin() -> tuple[str, str]:
    """The conninfo of the server's ``postgres`` database and the user that reached it."""
    reasons: list[str] = []
    for user in dict.fromkeys(("postgres", getpass.getuser())):
        conninfo = make_conninfo(
            host=POSTGRES_HOST, port=POSTGRES_PORT, user=user, dbname="postgres", connect_timeout=3
        )
        try:
            with psycopg.connect(conninfo):
                return conninfo, user
        except psycopg.OperationalError as exc:
            reasons.append(f"as {user}: {str(exc).strip()}")
    raise ServiceUnavailable(
        f"PostgreSQL not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}: " + "; ".join(reasons)
    )


def create_postgres_database() -> PostgresDatabase:
    """A new ``recon_bench_<hex>`` database, migrated to head."""
    admin, user = postgres_admin()
    database = PostgresDatabase(f"recon_bench_{uuid.uuid4().hex}", user, admin)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database.name)))
    try:
        upgrade(database.url)
    except BaseException:
        database.drop()
        raise
    return database


# --- sandbox endpoints --------------------------------------------------------------------------


class Sandboxes:
    """One sandbox server per endpoint (scenario file), all stopped when the block ends."""

    def __init__(self, scenarios: Mapping[str, Path]) -> None:
        self._scenarios = dict(scenarios)
        self._stack = ExitStack()
        self.servers: dict[str, SandboxServer] = {}

    def __enter__(self) -> Self:
        try:
            for name, path in self._scenarios.items():
                self.servers[name] = self._stack.enter_context(SandboxServer(path, port=0))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    @property
    def base_urls(self) -> dict[str, str]:
        return {name: server.base_url for name, server in self.servers.items()}

    def reset(self) -> None:
        """Fresh rate-limit windows and counters on every endpoint."""
        for server in self.servers.values():
            server.reset()

    def throttled(self) -> int:
        """429s (rate-limit refusals) sent by every endpoint since the last reset."""
        return sum(server.state.throttled_count() for server in self.servers.values())

    def requests(self) -> int:
        """Requests that reached an account, on every endpoint, since the last reset."""
        return sum(
            server.request_count(account.id)
            for server in self.servers.values()
            for account in server.scenario.accounts
        )


# --- worker processes ---------------------------------------------------------------------------


def celery_script() -> Path:
    """The ``celery`` command of the running interpreter's environment."""
    script = Path(sys.executable).parent / "celery"
    if not script.is_file():
        raise BenchError(f"{script} is missing: run the bench with the project's .venv/bin/python")
    return script


def death_signal_prefix() -> list[str]:
    """``setpriv --pdeathsig KILL`` when available: the process dies with its parent."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []


def worker_environment(variables: Mapping[str, str]) -> dict[str, str]:
    """A hermetic environment: the system's basics, the bench's variables, none of the
    caller's ``RECONCILIATION_*`` settings."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "MALLOC_ARENA_MAX")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO_ROOT), **variables)
    return env


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and of its child processes (a prefork pool's), in kB; 0 if gone."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        status = Path(f"/proc/{current}/status")
        try:
            text = status.read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
        total += int(match.group(1)) if match else 0
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids.extend(int(c) for c in task.read_text(encoding="ascii").split())
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and of its child processes, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids.extend(int(c) for c in task.read_text(encoding="ascii").split())
    return total / ticks


class WorkerProcess:
    """``celery -A bench.worker worker --pool P [--concurrency N] -n name@%h``."""

    def __init__(
        self,
        name: str,
        *,
        pool: str,
        concurrency: int | None,
        env: Mapping[str, str],
        folder: Path,
        app_module: str = "bench.worker",
    ) -> None:
        self.name = name
        self.log_path = folder / f"{name}.log"
        args = ["worker", "--pool", pool, "-n", f"{name}@%h"]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        self._log: IO[bytes] = self.log_path.open("ab")
        try:
            self.popen = subprocess.Popen(  # noqa: S603 - our own interpreter's celery
                [*death_signal_prefix(), str(celery_script()), "-A", app_module, *args],
                env=dict(env),
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait for the worker's ``<node> ready.`` line."""
        needle = f"{self.name}@{socket.gethostname()} ready."
        deadline = time.monotonic() + timeout
        while needle not in self.log():
            if self.popen.poll() is not None:
                raise BenchError(f"worker {self.name} exited early:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"worker {self.name} not ready in {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def close(self) -> None:
        """SIGTERM (warm shutdown), SIGKILL after :data:`STOP_TIMEOUT`; close the log."""
        try:
            if self.popen.poll() is None:
                self.popen.send_signal(signal.SIGTERM)
                try:
                    self.popen.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.popen.send_signal(signal.SIGKILL)
                    self.popen.wait(timeout=STOP_TIMEOUT)
        finally:
            self._log.close()


class Workers:
    """The run's worker processes, started side by side and all stopped when the block ends."""

    def __init__(
        self,
        count: int,
        *,
        pool: str,
        concurrency: int | None,
        env: Mapping[str, str],
        folder: Path,
        prefix: str,
        app_module: str = "bench.worker",
    ) -> None:
        self.processes: list[WorkerProcess] = []
        try:
            for i in range(count):
                self.processes.append(
                    WorkerProcess(
                        f"{prefix}{i + 1}",
                        pool=pool,
                        concurrency=concurrency,
                        env=env,
                        folder=folder,
                        app_module=app_module,
                    )
                )
            for process in self.processes:
                process.wait_ready()
        except BaseException:
            self.close()
            raise

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
        for process in self.processes:
            process.close()

    def rss_kb(self) -> list[int]:
        return [p.rss_kb() for p in self.processes]

    def cpu_seconds(self) -> float:
        """CPU time the workers (and their children) used so far."""
        return sum(cpu_seconds(p.pid) for p in self.processes)

    def check_alive(self) -> None:
        for process in self.processes:
            if not process.alive():
                raise BenchError(f"worker {process.name} died:\n{process.tail()}")

    def all_have_joined(self) -> bool:
        """Whether every worker has written a cycle's audit rows (run a join)."""
        return all(_AUDIT_LINE.search(process.log()) for process in self.processes)

    def audit_write_seconds(self, cycle_id: str) -> tuple[float, float] | None:
        """``(transaction, encoding)`` seconds of ``cycle_id``'s audit write from the workers'
        logs (the last one logged)."""
        found: tuple[float, float] | None = None
        for process in self.processes:
            for match in _AUDIT_LINE.finditer(process.log()):
                if match.group("cycle") == cycle_id:
                    found = (float(match.group("s")), float(match.group("e")))
        return found


# --- the client ---------------------------------------------------------------------------------


def client_app(redis_url: str, *, name: str = "recon-bench") -> Celery:
    """A bare Celery client (JSON only), as another service would use; close it with
    :func:`close_client`."""
    app = Celery(name, broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        broker_connection_retry_on_startup=True,
    )
    return app


def close_client(app: Celery) -> None:
    """Close the client's result backend's Redis connections and the broker connections.

    Broker connections live in kombu's process-wide pools (shared by every app on the same
    URL): they are closed and forgotten, so the next client starts afresh.
    """
    backend = app.__dict__.get("backend")  # only if it was ever used
    if backend is not None:
        consumer = getattr(backend, "result_consumer", None)
        if consumer is not None:
            consumer.stop()
        backend.client.connection_pool.disconnect()
    app.close()
    kombu.pools.reset()


def run_reconcile_all(app: Celery, *, timeout: float) -> tuple[float, str, dict[str, Any]]:
    """Enqueue ``recon.reconcile_all`` by name and wait for the cycle: (wall seconds from
    the enqueue to the result, the cycle id, the cycle JSON)."""
    started = time.perf_counter()
    result = app.send_task("recon.reconcile_all", kwargs={})
    cycle = result.get(timeout=timeout, interval=0.01)
    wall = time.perf_counter() - started
    result.forget()
    if not isinstance(cycle, dict):
        raise BenchError(f"recon.reconcile_all returned {type(cycle).__name__}, not a cycle")
    return wall, str(result.id), cycle


def reports_by_status(cycle: Mapping[str, Any]) -> dict[str, str]:
    """Account id → report status of a cycle's JSON."""
    reports: Sequence[Mapping[str, Any]] = cycle.get("reports", [])
    return {str(r["account_id"]): str(r["status"]) for r in reports}
