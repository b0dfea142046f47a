"""``recon history`` over an audit file written by real ``recon reconcile`` runs.

Every test first runs two cycles against a sandbox on loopback: the whole roster (cb-x, dx-0,
dx-1), then cb-x alone, so the store holds four reports, the newest being cb-x's second.
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any

import pytest

from cli.render import HISTORY_COLUMNS
from domain.amounts import parse_amount
from tests.support import (
    Desk,
    coin,
    coinbase_venue,
    desk_fixture,  # noqa: F401  (the ``desk`` fixture)
    dydx_venue,
)

VENUES = (
    coinbase_venue(
        "cb-x",
        page_size=2,
        balances=[
            coin("BTC", "1.00000000", "0.25"),
            coin("USDC", "1000.000000001"),
            coin("ETH", "0.123456789012345678"),
        ],
    ),
    dydx_venue(
        "dx-0",
        subaccount=0,
        assets=[{"symbol": "USDC", "side": "LONG", "size": "10200"}],
        perpetuals=[{"market": "ETH-USD", "side": "SHORT", "size": "1.5"}],
    ),
    dydx_venue("dx-1", subaccount=1, assets=[{"symbol": "USDC", "side": "LONG", "size": "5000"}]),
)
BOOK = {
    "cb-x": {"BTC": "1.25", "USDC": "1000", "ETH": "0.123456789012345678"},
    "dx-0": {"USDC": "10000", "ETH/USD:USDC": "-1.5"},
    "dx-1": {"USDC": "5000"},
}


@pytest.fixture
def printed(desk: Desk) -> list[dict[str, Any]]:
    """Two cycles run and audited; every report they printed, newest first."""
    desk.start(*VENUES, book=BOOK)
    reports: list[dict[str, Any]] = []
    for args in (("--all",), ("--account", "cb-x")):
        result, cycle = desk.reconcile_json(*args)
        assert result.exit_code == 0, result.stderr
        reports.extend(cycle["reports"])
    return sorted(reports, key=lambda r: r["reconciled_at"], reverse=True)


def _history(desk: Desk, *args: str) -> list[dict[str, Any]]:
    result = desk.recon("history", "--json", *args)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout, parse_float=Decimal, parse_int=Decimal)
    assert isinstance(document, list)
    return document


def test_json_history_is_every_printed_report_newest_first(
    desk: Desk, printed: list[dict[str, Any]]
) -> None:
    """``--json`` is the list of §5 report dicts, newest first, equal to what reconcile printed."""
    history = _history(desk)

    assert history == printed
    assert [r["account_id"] for r in history] == ["cb-x", "dx-1", "dx-0", "cb-x"]
    stamps = [r["reconciled_at"] for r in history]
    assert stamps == sorted(stamps, reverse=True)


def test_json_history_round_trips_exact_decimal_strings(
    desk: Desk, printed: list[dict[str, Any]]
) -> None:
    """Amounts come back as the same decimal strings: no float, no rounding, no exponent."""
    newest = _history(desk, "--account", "cb-x", "--limit", "1")[0]

    assert newest == printed[0]
    assert newest["exchange_balances"] == {
        "BTC": "1.25",
        "ETH": "0.123456789012345678",
        "USDC": "1000.000000001",
    }
    (precision,) = newest["discrepancies"]
    assert (precision["asset"], precision["type"]) == ("USDC", "precision")
    assert (precision["diff"], precision["value_usd"]) == ("0.000000001", "0.000000001")
    assert parse_amount(precision["diff"]) == Decimal("1E-9")
    dx0 = next(r for r in _history(desk, "--account", "dx-0"))
    assert dx0["exchange_balances"]["ETH/USD:USDC"] == "-1.5"


def test_history_filters_by_account(desk: Desk, printed: list[dict[str, Any]]) -> None:
    """``--account`` returns only that account's reports, newest first."""
    history = _history(desk, "--account", "cb-x")

    assert history == [r for r in printed if r["account_id"] == "cb-x"]
    assert len(history) == 2
    assert len({r["cycle_id"] for r in history}) == 2
    assert _history(desk, "--account", "nobody") == []


def test_history_filters_by_exchange(desk: Desk, printed: list[dict[str, Any]]) -> None:
    """``--exchange`` returns only that venue's reports."""
    history = _history(desk, "--exchange", "dydx")

    assert history == [r for r in printed if r["exchange"] == "dydx"]
    assert {r["account_id"] for r in history} == {"dx-0", "dx-1"}


def test_history_limit_keeps_the_newest(desk: Desk, printed: list[dict[str, Any]]) -> None:
    """``--limit N`` returns the N newest reports."""
    assert _history(desk, "--limit", "2") == printed[:2]
    assert _history(desk, "--limit", "1", "--exchange", "dydx") == [
        next(r for r in printed if r["exchange"] == "dydx")
    ]


def test_history_limit_below_one_is_a_usage_error(
    desk: Desk, printed: list[dict[str, Any]]
) -> None:
    """``--limit 0`` is refused by the command line parser (exit 2)."""
    assert printed
    result = desk.recon("history", "--limit", "0")

    assert result.exit_code == 2


def test_csv_history_has_a_header_and_one_row_per_report(
    desk: Desk, printed: list[dict[str, Any]]
) -> None:
    """``--csv`` prints the header and one row per report, newest first, with no amount."""
    result = desk.recon("history", "--csv")

    assert result.exit_code == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert tuple(rows[0]) == HISTORY_COLUMNS
    body = [dict(zip(HISTORY_COLUMNS, row, strict=True)) for row in rows[1:]]
    assert [r["reconciliation_id"] for r in body] == [r["reconciliation_id"] for r in printed]
    assert [(r["account_id"], r["status"]) for r in body] == [
        (r["account_id"], r["status"]) for r in printed
    ]
    assert [r["discrepancy_count"] for r in body] == [str(len(r["discrepancies"])) for r in printed]
    assert "1000.000000001" not in result.stdout


def test_csv_history_honours_the_filters(desk: Desk, printed: list[dict[str, Any]]) -> None:
    """``--csv`` with ``--exchange`` and ``--limit`` prints only the chosen rows."""
    assert printed
    result = desk.recon("history", "--csv", "--exchange", "coinbase", "--limit", "1")

    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert ",cb-x,coinbase," in lines[1]


def test_table_history_lists_every_account(desk: Desk, printed: list[dict[str, Any]]) -> None:
    """The default table names each account and says how many reports it shows."""
    assert printed
    result = desk.recon("history")

    assert result.exit_code == 0, result.stderr
    assert "history (4 reports)" in result.stdout
    for account in ("cb-x", "dx-0", "dx-1"):
        assert account in result.stdout
    assert "WARNING" in result.stdout


def test_json_and_csv_together_are_a_usage_error(desk: Desk) -> None:
    """``--json`` with ``--csv`` is refused (exit 2) before the store is opened."""
    desk.start(*VENUES, book=BOOK)

    result = desk.recon("history", "--json", "--csv")

    assert result.exit_code == 2
    assert not desk.db_path.exists()


def test_history_of_an_empty_store_is_empty(desk: Desk) -> None:
    """On a fresh audit file history is an empty list, an empty CSV body, a zero-report table."""
    desk.start(*VENUES, book=BOOK)

    assert _history(desk) == []
    assert desk.recon("history", "--csv").stdout.splitlines() == [",".join(HISTORY_COLUMNS)]
    assert "history (0 reports)" in desk.recon("history").stdout
