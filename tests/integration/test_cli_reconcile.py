"""``recon reconcile`` over loopback HTTP against the sandbox venue, audit file on SQLite.

Each test serves its own sandbox scenario on an ephemeral port, writes a roster pointing at it
and a book beside it, and runs the command in process (click's CliRunner), except the
concurrency test, which runs two ``recon`` processes at once.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from infra.sandbox import SandboxServer
from tests.support import (
    DEMO_KEYS,
    Desk,
    clean_environ,
    coin,
    coinbase_venue,
    desk_fixture,  # noqa: F401  (the ``desk`` fixture)
    dydx_venue,
    fault,
    recon_script,
    reports_by_account,
    roster_entry,
)


def _long(symbol: str, size: str) -> dict[str, str]:
    return {"symbol": symbol, "side": "LONG", "size": size}


def _perp(market: str, side: str, size: str) -> dict[str, str]:
    return {"market": market, "side": side, "size": size}


# A Coinbase portfolio over three pages (page_size 2), with holds and a vault.
CB_PAGED = coinbase_venue(
    "cb-x",
    page_size=2,
    balances=[
        coin("BTC", "1.00000000", "0.25"),
        coin("USD", "25000.00", "500.00", kind="ACCOUNT_TYPE_FIAT"),
        coin("BTC", "0.5", kind="ACCOUNT_TYPE_VAULT"),
        coin("ETH", "10", "2.5"),
        coin("USDC", "1000.000000001"),
    ],
)
DX_0 = dydx_venue(
    "dx-0",
    subaccount=0,
    assets=[_long("USDC", "10200")],
    perpetuals=[_perp("ETH-USD", "SHORT", "1.5")],
)
DX_1 = dydx_venue("dx-1", subaccount=1, assets=[_long("USDC", "5000")])
MULTI_BOOK = {
    "cb-x": {"BTC": "1.75", "ETH": "12.5", "USD": "25500.00", "USDC": "1000"},
    "dx-0": {"USDC": "10000", "ETH/USD:USDC": "-1.5"},
    "dx-1": {"USDC": "5000"},
}


def test_multi_venue_cycle_writes_one_audit_row_per_account_and_history_rebuilds_it(
    desk: Desk,
) -> None:
    """A paginated Coinbase portfolio and two dYdX subaccounts reconcile in one audited cycle."""
    server = desk.start(CB_PAGED, DX_0, DX_1, book=MULTI_BOOK)

    result, cycle = desk.reconcile_json("--all")

    assert result.exit_code == 0, result.stderr
    reports = reports_by_account(cycle["reports"])
    assert set(reports) == {"cb-x", "dx-0", "dx-1"}
    assert server.request_count("cb-x") == 3  # three pages of two accounts
    assert reports["cb-x"]["exchange_balances"] == {
        "BTC": "1.75",
        "ETH": "12.5",
        "USD": "25500",
        "USDC": "1000.000000001",
    }
    assert [(d["asset"], d["type"], d["severity"]) for d in reports["cb-x"]["discrepancies"]] == [
        ("USDC", "precision", "INFO")
    ]
    assert reports["dx-0"]["exchange_balances"] == {"ETH/USD:USDC": "-1.5", "USDC": "10200"}
    assert reports["dx-0"]["status"] == "WARNING"
    assert reports["dx-1"]["status"] == "SUCCESS"
    assert cycle["status"] == "WARNING"

    rows = desk.rows()
    assert sorted(r["account_id"] for r in rows) == ["cb-x", "dx-0", "dx-1"]
    assert {r["cycle_id"] for r in rows} == {cycle["cycle_id"]}
    assert len({r["reconciliation_id"] for r in rows}) == 3
    assert {r["account_id"]: r["reconciliation_id"] for r in rows} == {
        a: r["reconciliation_id"] for a, r in reports.items()
    }

    history = desk.recon("history", "--json")
    assert history.exit_code == 0, history.stderr
    assert reports_by_account(json.loads(history.stdout)) == reports


# --- configuration refused before any work ---------------------------------------------------


@dataclass(frozen=True)
class BadConfig:
    """A configuration problem: how to plant it, and what the refusal must name."""

    accounts: Callable[[str], list[dict[str, Any]]]
    names: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    names_roster: bool = True


def _valid(base_url: str) -> list[dict[str, Any]]:
    return [roster_entry(CB_PAGED, base_url), roster_entry(DX_0, base_url)]


def _with(change: Callable[[str], dict[str, Any]]) -> Callable[[str], list[dict[str, Any]]]:
    return lambda base_url: [*_valid(base_url), change(base_url)]


def _cb_entry(base_url: str, **fields: str) -> dict[str, Any]:
    return {**roster_entry(coinbase_venue("cb-bad", key="cb-desk2"), base_url), **fields}


LITERAL_SECRET = DEMO_KEYS["cb-desk2"].private_pem.read_text(encoding="utf-8")

BAD_CONFIGS = {
    "unknown exchange": BadConfig(
        _with(lambda url: {"id": "ftx-1", "exchange": "ftx", "base_url": url}),
        ("account 'ftx-1'", "field 'exchange'", "unknown exchange"),
    ),
    "duplicate id": BadConfig(
        _with(lambda url: roster_entry(DX_0, url) | {"subaccount": 7}),
        ("account 'dx-0'", "field 'id'", "duplicate id"),
    ),
    "literal secret": BadConfig(
        _with(lambda url: _cb_entry(url, api_secret=LITERAL_SECRET)),
        ("account 'cb-bad'", "field 'api_secret'", "literal secret"),
    ),
    "missing env secret": BadConfig(
        _with(lambda url: _cb_entry(url, api_key="env:RECON_TEST_UNSET_KEY_NAME")),
        ("account 'cb-bad'", "field 'api_key'", "env:RECON_TEST_UNSET_KEY_NAME"),
    ),
    "bad environment variable": BadConfig(
        _valid,
        ("RECONCILIATION_RETRY_COUNT", "integer"),
        env={"RECONCILIATION_RETRY_COUNT": "abc"},
        names_roster=False,
    ),
}


@pytest.mark.parametrize("case", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_configuration_error_refuses_the_whole_run_before_any_work(
    desk: Desk, monkeypatch: pytest.MonkeyPatch, case: BadConfig
) -> None:
    """A bad roster or variable exits 5 naming file/account/field: no request, no audit file."""
    monkeypatch.delenv("RECON_TEST_UNSET_KEY_NAME", raising=False)
    server = desk.start(CB_PAGED, DX_0, book=MULTI_BOOK)
    desk.write_roster(case.accounts(server.base_url))

    result = desk.recon("reconcile", "--all", **case.env)

    assert result.exit_code == 5
    assert result.stdout == ""
    message = result.stderr
    assert "configuration refused" in message
    for name in case.names:
        assert name in message
    if case.names_roster:
        assert str(desk.roster_path) in message
    assert "PRIVATE KEY" not in message  # the secret is never repeated
    assert server.request_count("cb-x") == 0
    assert server.request_count("dx-0") == 0
    assert not desk.db_path.exists()


# --- exit codes ------------------------------------------------------------------------------

Outcome = tuple[dict[str, Any], dict[str, dict[str, str]], str, int]
OUTCOMES: dict[str, Outcome] = {
    "success": (
        dydx_venue("dx-0", subaccount=0, assets=[_long("USDC", "10000")]),
        {"dx-0": {"USDC": "10000"}},
        "SUCCESS",
        0,
    ),
    "warning": (  # 200 USD off, 1.96 %: a WARNING mismatch
        dydx_venue("dx-0", subaccount=0, assets=[_long("USDC", "10200")]),
        {"dx-0": {"USDC": "10000"}},
        "WARNING",
        0,
    ),
    "error": (  # the venue is down: every request is a 503
        coinbase_venue("cb-x", faults=[fault("status_5xx", "always", status=503)]),
        {"cb-x": {"BTC": "1"}},
        "ERROR",
        3,
    ),
    "critical": (  # a 0.5 BTC long the book lacks: 30000 USD
        dydx_venue("dx-0", subaccount=0, perpetuals=[_perp("BTC-USD", "LONG", "0.5")]),
        {"dx-0": {}},
        "CRITICAL",
        4,
    ),
}


@pytest.mark.parametrize(
    ("venue", "book", "status", "code"), OUTCOMES.values(), ids=OUTCOMES.keys()
)
def test_exit_code_follows_the_cycle_status(
    desk: Desk, venue: dict[str, Any], book: dict[str, dict[str, str]], status: str, code: int
) -> None:
    """SUCCESS and WARNING exit 0, ERROR exits 3, CRITICAL exits 4."""
    desk.start(venue, book=book)

    result, cycle = desk.reconcile_json()

    assert cycle["status"] == status
    assert result.exit_code == code
    assert [r["status"] for r in desk.rows()] == [status]


def test_an_error_and_a_critical_account_together_exit_critical(desk: Desk) -> None:
    """Any CRITICAL report makes the run exit 4, whatever else failed."""
    critical, critical_book, _, _ = OUTCOMES["critical"]
    down, down_book, _, _ = OUTCOMES["error"]
    desk.start(critical, down, book={**critical_book, **down_book})

    result, cycle = desk.reconcile_json()

    assert sorted(r["status"] for r in cycle["reports"]) == ["CRITICAL", "ERROR"]
    assert result.exit_code == 4


def test_unknown_account_is_a_configuration_error(desk: Desk) -> None:
    """``--account`` naming no roster account exits 5 naming it, before any request."""
    server = desk.start(CB_PAGED, book=MULTI_BOOK)

    result = desk.recon("reconcile", "--account", "cb-nope")

    assert result.exit_code == 5
    assert "'cb-nope'" in result.stderr
    assert server.request_count("cb-x") == 0
    assert not desk.db_path.exists()


def test_all_with_account_is_a_usage_error(desk: Desk) -> None:
    """``--all`` together with ``--account`` is refused by the command line parser (exit 2)."""
    server = desk.start(CB_PAGED, book=MULTI_BOOK)

    result = desk.recon("reconcile", "--all", "--account", "cb-x")

    assert result.exit_code == 2
    assert "choose one of --all, --account, --exchange" in result.stderr
    assert server.request_count("cb-x") == 0


# --- selection -------------------------------------------------------------------------------

CB_Y = coinbase_venue("cb-y", key="cb-desk2", balances=[coin("ETH", "2")])
SELECTION_BOOK = {**MULTI_BOOK, "cb-y": {"ETH": "2"}}


@pytest.mark.parametrize(
    ("args", "chosen"),
    [
        (("--account", "cb-y", "--account", "dx-1"), {"cb-y", "dx-1"}),
        (("--account", "dx-0"), {"dx-0"}),
        (("--exchange", "dydx"), {"dx-0", "dx-1"}),
        (("--exchange", "coinbase"), {"cb-x", "cb-y"}),
    ],
    ids=["two accounts", "one account", "dydx", "coinbase"],
)
def test_selection_reconciles_and_audits_only_the_chosen_accounts(
    desk: Desk, args: tuple[str, ...], chosen: set[str]
) -> None:
    """``--account`` (repeatable) and ``--exchange`` fetch, report and audit only their accounts."""
    server = desk.start(CB_PAGED, CB_Y, DX_0, DX_1, book=SELECTION_BOOK)

    result, cycle = desk.reconcile_json(*args)

    assert result.exit_code in (0, 4), result.stderr
    assert {r["account_id"] for r in cycle["reports"]} == chosen
    assert {r["account_id"] for r in desk.rows()} == chosen
    for account in ("cb-x", "cb-y", "dx-0", "dx-1"):
        assert (server.request_count(account) > 0) == (account in chosen), account


def test_unknown_exchange_selection_is_refused(desk: Desk) -> None:
    """``--exchange`` naming a venue with no roster account exits 5 and writes nothing."""
    desk.start(DX_0, book=MULTI_BOOK)

    result = desk.recon("reconcile", "--exchange", "kraken")

    assert result.exit_code == 5
    assert "'kraken'" in result.stderr
    assert desk.rows() == []


# --- edge cases ------------------------------------------------------------------------------


def test_zero_balances_on_both_sides_are_not_a_discrepancy(desk: Desk) -> None:
    """A zero venue balance against a zero book balance reconciles cleanly (SUCCESS)."""
    desk.start(
        coinbase_venue("cb-x", balances=[coin("BTC", "0", "0"), coin("ETH", "0.000")]),
        book={"cb-x": {"BTC": "0", "ETH": "0"}},
    )

    result, cycle = desk.reconcile_json()

    (report,) = cycle["reports"]
    assert result.exit_code == 0
    assert report["status"] == "SUCCESS"
    assert report["discrepancies"] == []
    assert report["error"] is None


def test_an_asset_on_one_side_only_is_missing_from_the_other(desk: Desk) -> None:
    """An asset the book lacks is missing from ``local``; one the venue lacks, from ``exchange``."""
    desk.start(
        coinbase_venue(
            "cb-x", balances=[coin("ETH", "1"), coin("USD", "50", kind="ACCOUNT_TYPE_FIAT")]
        ),
        book={"cb-x": {"BTC": "0.5", "USD": "50"}},
    )

    result, cycle = desk.reconcile_json()

    (report,) = cycle["reports"]
    found = {d["asset"]: d for d in report["discrepancies"]}
    assert set(found) == {"BTC", "ETH"}
    assert found["ETH"]["type"] == "missing"
    assert found["ETH"]["missing_from"] == "local"
    assert (found["ETH"]["local"], found["ETH"]["exchange"]) == ("0", "1")
    assert (found["ETH"]["value_usd"], found["ETH"]["severity"]) == ("3000", "CRITICAL")
    assert found["BTC"]["type"] == "missing"
    assert found["BTC"]["missing_from"] == "exchange"
    assert (found["BTC"]["diff"], found["BTC"]["value_usd"]) == ("-0.5", "30000")
    assert found["BTC"]["severity"] == "CRITICAL"
    assert report["status"] == "CRITICAL"
    assert result.exit_code == 4


def test_an_empty_portfolio_against_an_empty_book_succeeds(desk: Desk) -> None:
    """A venue with no accounts and a book with none reconcile as SUCCESS, with no findings."""
    desk.start(coinbase_venue("cb-x", balances=[]), book={"cb-x": {}})

    result, cycle = desk.reconcile_json()

    (report,) = cycle["reports"]
    assert result.exit_code == 0
    assert report["status"] == "SUCCESS"
    assert report["local_balances"] == {}
    assert report["exchange_balances"] == {}
    assert report["discrepancies"] == []


def test_an_account_absent_from_the_book_has_an_empty_book(desk: Desk) -> None:
    """The venue's priced holdings of an account the book omits are CRITICAL, unpriced ERROR."""
    desk.start(
        coinbase_venue("cb-x", balances=[coin("BTC", "1"), coin("XYZ", "5")]),
        book={},
    )

    result, cycle = desk.reconcile_json()

    (report,) = cycle["reports"]
    found = {d["asset"]: d for d in report["discrepancies"]}
    assert report["local_balances"] == {}
    assert (found["BTC"]["missing_from"], found["BTC"]["severity"]) == ("local", "CRITICAL")
    assert found["BTC"]["value_usd"] == "60000"
    assert (found["XYZ"]["missing_from"], found["XYZ"]["severity"]) == ("local", "ERROR")
    assert found["XYZ"]["value_usd"] is None
    assert report["status"] == "CRITICAL"
    assert result.exit_code == 4


def test_two_concurrent_runs_of_one_account_both_write_their_own_cycle(desk: Desk) -> None:
    """Two ``recon reconcile --account`` processes at once on one SQLite file both succeed."""
    server: SandboxServer = desk.start(CB_PAGED, book=MULTI_BOOK)
    environ = clean_environ(**desk.env())
    command = [str(recon_script()), "reconcile", "--account", "cb-x", "--json"]

    processes = [
        subprocess.Popen(
            command,
            cwd=desk.folder,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]

    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    cycles = [json.loads(stdout)["cycle_id"] for stdout, _ in outputs]
    rows = desk.rows()
    assert [r["account_id"] for r in rows] == ["cb-x", "cb-x"]
    assert {r["cycle_id"] for r in rows} == set(cycles)
    assert len(set(cycles)) == 2
    assert server.request_count("cb-x") == 6
    history = desk.recon("history", "--account", "cb-x", "--json")
    assert {r["cycle_id"] for r in json.loads(history.stdout)} == set(cycles)


def test_json_output_is_the_cycle_document_alone(desk: Desk) -> None:
    """With ``--json`` standard output parses as one JSON document; logs go to standard error."""
    desk.start(CB_PAGED, DX_0, book=MULTI_BOOK)

    result, cycle = desk.reconcile_json()

    assert set(cycle) == {"cycle_id", "started_at", "finished_at", "status", "reports"}
    assert "cycle finished" in result.stderr
    assert "cycle finished" not in result.stdout


def test_table_output_names_every_account_and_the_cycle_status(desk: Desk) -> None:
    """Without ``--json`` the cycle prints as tables with each account and the worst status."""
    desk.start(CB_PAGED, DX_0, book=MULTI_BOOK)

    result = desk.recon("reconcile")

    assert result.exit_code == 0
    assert "cb-x" in result.stdout
    assert "dx-0" in result.stdout
    assert "cycle status: WARNING" in result.stdout
    assert len(desk.rows()) == 2
