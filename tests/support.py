"""Shared helpers of the CLI integration and end-to-end tests: one desk in a temporary folder.

A :class:`Desk` owns one test's folder. :meth:`Desk.start` serves a sandbox scenario on an
ephemeral loopback port and writes the roster (TOML, every account pointing at that server)
and the book (JSON) beside it; :meth:`Desk.recon` runs the ``recon`` command in process through
click's ``CliRunner`` with a hermetic environment; :meth:`Desk.rows` reads the audit table.
Scenario accounts are plain dicts built by :func:`coinbase_venue` and :func:`dydx_venue`, with
the sandbox's demo Coinbase keys (``infra/sandbox/data/keys``) referenced by absolute path.

Test modules get the ``desk`` fixture by importing :func:`desk_fixture`::

    from tests.support import desk_fixture  # noqa: F401  (the ``desk`` fixture)
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text

from cli.main import main
from infra.sandbox import DATA_DIR, SandboxServer, parse_scenario

KEYS_DIR: Final = DATA_DIR / "keys"
#: An alphanumeric dYdX address of the tests' own (the sandbox only checks its shape).
DYDX_ADDRESS: Final = "dydx1testdesk000000000000000000000000000qz"
#: USD marks of every test roster and scenario (USD, USDC, USDT are 1 unless set).
PRICES: Final[Mapping[str, str]] = {"BTC": "60000", "ETH": "3000"}
#: The DESIGN §2 example policy: threshold 100 USD, critical 10000 USD, USD tolerance 0.01.
POLICY: Final[Mapping[str, Any]] = {
    "threshold_usd": "100",
    "critical_usd": "10000",
    "tolerance": {"default": "0.00000001", "USD": "0.01"},
}
#: Loggers whose level :func:`bootstrap.configure_logging` changes (restored after a run).
_LIBRARY_LOGGERS: Final = ("httpx", "alembic", "uvicorn", "uvicorn.error", "uvicorn.access")


@dataclass(frozen=True, slots=True)
class DemoKey:
    """One of the sandbox's demo Coinbase CDP keys: its name and its PEM files."""

    name_file: Path
    private_pem: Path
    public_pem: Path

    @property
    def key_name(self) -> str:
        """The CDP key name (the JWT ``kid``) the sandbox accepts for this key."""
        return self.name_file.read_text(encoding="utf-8").strip()


DEMO_KEYS: Final[Mapping[str, DemoKey]] = {
    stem: DemoKey(KEYS_DIR / f"{stem}.name", KEYS_DIR / f"{stem}.pem", KEYS_DIR / f"{stem}.pub.pem")
    for stem in ("cb-main", "cb-desk2")
}


# --- scenario accounts (what the sandbox venue holds) ----------------------------------------


def coin(
    currency: str, available: str, hold: str = "0", *, kind: str = "ACCOUNT_TYPE_CRYPTO"
) -> dict[str, str]:
    """One Coinbase account (wallet or vault) of a scenario: ``available`` + ``hold``."""
    return {"currency": currency, "available": available, "hold": hold, "type": kind}


def coinbase_venue(
    account_id: str,
    *,
    key: str = "cb-main",
    balances: Sequence[Mapping[str, str]] = (),
    page_size: int | None = None,
    faults: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """A Coinbase scenario account signed for by the demo key ``key`` (one account per key)."""
    entry: dict[str, Any] = {
        "id": account_id,
        "venue": "coinbase",
        "key_name": DEMO_KEYS[key].key_name,
        "public_key_file": str(DEMO_KEYS[key].public_pem),
        "balances": [dict(b) for b in balances],
        "faults": [dict(f) for f in faults],
    }
    if page_size is not None:
        entry["page_size"] = page_size
    return entry


def dydx_venue(
    account_id: str,
    *,
    subaccount: int,
    assets: Sequence[Mapping[str, str]] = (),
    perpetuals: Sequence[Mapping[str, str]] = (),
    faults: Sequence[Mapping[str, Any]] = (),
    address: str = DYDX_ADDRESS,
) -> dict[str, Any]:
    """A dYdX subaccount of a scenario (``assets``/``perpetuals``: symbol|market, side, size)."""
    return {
        "id": account_id,
        "venue": "dydx",
        "address": address,
        "subaccount": subaccount,
        "assets": [dict(a) for a in assets],
        "perpetuals": [dict(p) for p in perpetuals],
        "faults": [dict(f) for f in faults],
    }


def fault(kind: str, times: int | str = 1, **fields: Any) -> dict[str, Any]:
    """One injected-fault rule of a scenario account (see ``infra.sandbox.scenario``)."""
    return {"kind": kind, "times": times, **fields}


# --- roster accounts (what recon is told) -----------------------------------------------------


def roster_entry(venue: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """The roster account that reconciles the scenario account ``venue`` at ``base_url``."""
    if venue["venue"] == "coinbase":
        key = next(k for k in DEMO_KEYS.values() if k.key_name == venue["key_name"])
        return {
            "id": venue["id"],
            "exchange": "coinbase",
            "base_url": base_url,
            "api_key": f"file:{key.name_file}",
            "api_secret": f"file:{key.private_pem}",
        }
    if venue["venue"] in {"kraken", "binance"}:
        # The sandbox's demo key pair of that venue (the scenario holds the same values).
        stem = f"{venue['venue']}-main"
        return {
            "id": venue["id"],
            "exchange": venue["venue"],
            "base_url": base_url,
            "api_key": f"file:{KEYS_DIR / f'{stem}.key'}",
            "api_secret": f"file:{KEYS_DIR / f'{stem}.secret'}",
        }
    return {
        "id": venue["id"],
        "exchange": "dydx",
        "base_url": base_url,
        "address": venue["address"],
        "subaccount": venue["subaccount"],
    }


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, Mapping):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}")


def write_roster(
    path: Path,
    accounts: Sequence[Mapping[str, Any]],
    *,
    book: str = "book.json",
    prices: Mapping[str, str] = PRICES,
    policy: Mapping[str, Any] = POLICY,
) -> Path:
    """Write an accounts file (DESIGN §2) with a file book at ``book`` (relative to ``path``)."""
    lines = ["[policy]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in policy.items() if k != "tolerance"]
    if "tolerance" in policy:
        lines += ["", "[policy.tolerance]"]
        lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in policy["tolerance"].items()]
    lines += ["", "[book]", 'source = "file"', f"path = {_toml_value(book)}", "", "[prices]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in prices.items()]
    for account in accounts:
        lines += ["", "[[accounts]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in account.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_book(path: Path, accounts: Mapping[str, Mapping[str, str]]) -> Path:
    """Write a book JSON (DESIGN §2): account id → asset → decimal string."""
    document = {"as_of": "2026-11-24T00:00:00Z", "accounts": accounts}
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return path


# --- running recon ---------------------------------------------------------------------------


def recon_script() -> Path:
    """The installed ``recon`` console script of the running interpreter's environment."""
    script = Path(sys.executable).parent / "recon"
    if not script.is_file():
        pytest.fail(f"{script} is missing: install the project (pip install -e '.[dev]') first")
    return script


def clean_environ(**overrides: str) -> dict[str, str]:
    """The process environment without any ``RECONCILIATION_*`` variable, plus ``overrides``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILIATION_")}
    environ.update(overrides)
    return environ


def run_recon(args: Sequence[str], env: Mapping[str, str]) -> Result:
    """``recon ARGS`` in process with ``env`` added to the environment; stdout/stderr apart.

    The command configures the root logger for its run (to the runner's standard error); the
    logging configuration is restored afterwards so later tests are not logged to a closed
    stream.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in _LIBRARY_LOGGERS}
    try:
        return CliRunner().invoke(main, list(args), env=dict(env), catch_exceptions=False)
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        for name, saved in levels.items():
            logging.getLogger(name).setLevel(saved)


def reports_by_account(document: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """A list of report dicts keyed by account id."""
    return {report["account_id"]: dict(report) for report in document}


class Desk:
    """One test's folder: sandbox servers, the roster and book they go with, the audit file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.roster_path = folder / "roster.toml"
        self.book_path = folder / "book.json"
        self.db_path = folder / "audit.db"
        self._resources = ExitStack()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._resources.close()

    @property
    def database_url(self) -> str:
        """The SQLite URL of this desk's audit file."""
        return f"sqlite:///{self.db_path}"

    def serve(
        self, *venues: Mapping[str, Any], prices: Mapping[str, str] = PRICES
    ) -> SandboxServer:
        """A running sandbox (latency 0) holding ``venues``; stopped when the test ends."""
        scenario = parse_scenario(
            {"latency_ms": 0, "prices": dict(prices), "accounts": [dict(v) for v in venues]},
            source=f"{self.folder}/scenario",
            base_dir=self.folder,
        )
        return self._resources.enter_context(SandboxServer(scenario))

    def start(
        self,
        *venues: Mapping[str, Any],
        book: Mapping[str, Mapping[str, str]],
        prices: Mapping[str, str] = PRICES,
        policy: Mapping[str, Any] = POLICY,
    ) -> SandboxServer:
        """Serve ``venues``, and write a roster of all of them and the given book."""
        server = self.serve(*venues, prices=prices)
        self.write_roster([roster_entry(v, server.base_url) for v in venues], policy=policy)
        write_book(self.book_path, book)
        return server

    def write_roster(
        self, accounts: Sequence[Mapping[str, Any]], *, policy: Mapping[str, Any] = POLICY
    ) -> Path:
        """Write this desk's roster with ``accounts`` (and its book path)."""
        return write_roster(self.roster_path, accounts, book=self.book_path.name, policy=policy)

    def env(self, **overrides: str) -> dict[str, str]:
        """The run's variables: this desk's roster and audit file, no retries, 2 s timeout."""
        variables = {
            "RECONCILIATION_ACCOUNTS_FILE": str(self.roster_path),
            "RECONCILIATION_DATABASE_URL": self.database_url,
            "RECONCILIATION_RETRY_COUNT": "0",
            "RECONCILIATION_TIMEOUT_SECONDS": "2",
            "RECONCILIATION_CONFIRM_DELAY_SECONDS": "0",
        }
        variables.update(overrides)
        return variables

    def recon(self, *args: str, **env: str) -> Result:
        """``recon ARGS`` in process against this desk (``env`` overrides :meth:`env`)."""
        return run_recon(args, self.env(**env))

    def reconcile_json(self, *args: str, **env: str) -> tuple[Result, dict[str, Any]]:
        """``recon reconcile --json ARGS``: the result and the parsed cycle document."""
        result = self.recon("reconcile", "--json", *args, **env)
        return result, json.loads(result.stdout)

    def rows(self) -> list[dict[str, Any]]:
        """Every audit row (account, cycle, report id, status, error), oldest first."""
        if not self.db_path.exists():
            return []
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                result = connection.execute(
                    text(
                        "SELECT account_id, cycle_id, reconciliation_id, exchange_id, status,"
                        " discrepancy_count, error_json FROM reconciliation_audit ORDER BY id"
                    )
                )
                return [dict(row._mapping) for row in result]
        finally:
            engine.dispose()


@pytest.fixture(name="desk")
def desk_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Desk]:
    """A :class:`Desk` in the test's folder, with no ``RECONCILIATION_*`` variable inherited."""
    for name in list(os.environ):
        if name.startswith("RECONCILIATION_"):
            monkeypatch.delenv(name)
    with Desk(tmp_path) as desk:
        yield desk


# --- a loopback book that records PUTs ---------------------------------------------------------


class _PutHandler(BaseHTTPRequestHandler):
    server: PutRecorder

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


class PutRecorder(ThreadingHTTPServer):
    """An HTTP book on loopback that records every PUT (path, content type, body) and answers
    ``status``; its book URL is :attr:`url`."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _PutHandler)
        self.received: list[tuple[str, str, bytes]] = []
        self.status = 204

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/book"


@contextmanager
def put_recorder() -> Iterator[PutRecorder]:
    """A :class:`PutRecorder` serving on a thread for the block."""
    httpd = PutRecorder()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
