"""The sandbox scenario: strict validation, fault counting, response builders, built-in data."""

from __future__ import annotations

import asyncio
import json
import logging
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from domain.discrepancy import DiscrepancyType, Severity, Side, compare
from domain.policy import Policy, PriceTable
from domain.report import Status
from infra.sandbox import (
    DATA_DIR,
    DEFAULT_ROSTER,
    DEFAULT_SCENARIO,
    FaultKind,
    ScenarioError,
    load_scenario,
    parse_scenario,
)
from infra.sandbox.coinbase import accounts_page, coinbase_amount, uri_matches
from infra.sandbox.dydx import subaccount_json
from infra.sandbox.scenario import (
    BinanceAccount,
    CoinbaseAccount,
    DydxAccount,
    Fault,
    KrakenAccount,
    RateLimit,
    Scenario,
)
from infra.sandbox.server import _RESET_FILTER
from infra.sandbox.state import (
    ConnectionResetFault,
    FaultSchedule,
    ResetConnection,
    WindowLimiter,
)

PUBLIC_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def coinbase(**fields: Any) -> dict[str, Any]:
    account: dict[str, Any] = {
        "id": "cb-1",
        "venue": "coinbase",
        "key_name": "organizations/o/apiKeys/k1",
        "public_key": PUBLIC_PEM,
        "balances": [{"currency": "BTC", "available": "1", "hold": "0.5"}],
    }
    account.update(fields)
    return account


def dydx(**fields: Any) -> dict[str, Any]:
    account: dict[str, Any] = {
        "id": "dydx-1",
        "venue": "dydx",
        "address": "dydx1abc",
        "subaccount": 0,
        "assets": [{"symbol": "USDC", "side": "LONG", "size": "100"}],
    }
    account.update(fields)
    return account


def parse(*accounts: dict[str, Any], **top: Any) -> Scenario:
    return parse_scenario({"accounts": list(accounts), **top}, source="s.toml")


# ---------------------------------------------------------------- validation


def test_valid_scenario_parses_amounts_exactly_as_decimal():
    """Amount strings become exact Decimals; defaults fill hold, type and latency."""
    scenario = parse(
        coinbase(balances=[{"currency": "ETH", "available": "0.1000000000000000001"}]),
        dydx(perpetuals=[{"market": "ETH-USD", "side": "SHORT", "size": "1.5"}]),
        prices={"ETH": "3000.5"},
        latency_ms=7,
    )
    cb = scenario.account("cb-1")
    assert isinstance(cb, CoinbaseAccount)
    assert cb.entries[0].available == Decimal("0.1000000000000000001")
    assert cb.entries[0].hold == 0
    assert cb.entries[0].type == "ACCOUNT_TYPE_CRYPTO"
    dx = scenario.account("dydx-1")
    assert isinstance(dx, DydxAccount)
    assert dx.perpetuals[0].signed_size == Decimal("-1.5")
    assert scenario.prices == {"ETH": Decimal("3000.5")}
    assert scenario.latency_of(cb) == 7


def test_fault_times_always_and_minus_one_mean_every_request():
    """``times = "always"`` and ``times = -1`` both mean the rule never runs out."""
    scenario = parse(
        coinbase(faults=[{"kind": "auth", "times": "always"}, {"kind": "reset", "times": -1}])
    )
    assert [f.times for f in scenario.accounts[0].faults] == [None, None]


def test_fault_defaults_per_kind():
    """Each fault kind gets its documented defaults (503, 1000 ms, 30 s, first variant)."""
    rules = [{"kind": kind, "times": 1} for kind in ("status_5xx", "rate_limit", "timeout")]
    rules.append({"kind": "malformed", "times": 1})
    faults = parse(coinbase(faults=rules)).accounts[0].faults
    assert (faults[0].status, faults[0].variant) == (503, "json")
    assert faults[1].retry_after_ms == 1000
    assert faults[2].seconds == 30.0
    assert faults[3].variant == "html"


@pytest.mark.parametrize(
    ("accounts", "top", "expected"),
    [
        ([coinbase()], {"colour": "blue"}, "unknown field(s) 'colour'"),
        ([coinbase(extra=1)], {}, "(id 'cb-1'): unknown field(s) 'extra'"),
        ([coinbase(venue="ftx")], {}, "field 'venue' must be one of coinbase, dydx"),
        ([coinbase(), coinbase(key_name="other")], {}, "duplicate account id 'cb-1'"),
        ([coinbase(), coinbase(id="cb-2")], {}, "duplicate credential"),
        ([dydx(), dydx(id="dydx-2")], {}, "duplicate credential"),
        (
            [coinbase(balances=[{"currency": "BTC", "available": 1.5}])],
            {},
            "balances[0]: field 'available' must be a decimal string",
        ),
        (
            [coinbase(balances=[{"currency": "BTC", "available": "-1"}])],
            {},
            "field 'available' is not a valid unsigned amount",
        ),
        (
            [coinbase(balances=[{"currency": "BTC", "available": "NaN"}])],
            {},
            "field 'available' is not a valid unsigned amount",
        ),
        (
            [coinbase(balances=[{"currency": "BTC", "available": "1", "type": "SPOT"}])],
            {},
            "field 'type' must be one of",
        ),
        ([coinbase(public_key=None)], {}, "'public_key' or 'public_key_file' must be given"),
        ([coinbase(public_key="")], {}, "field 'public_key' must be a non-empty string"),
        ([coinbase(public_key_file="k.pem")], {}, "exactly one"),
        ([coinbase(public_key="-----BEGIN NONSENSE-----")], {}, "is not a PEM public key"),
        ([coinbase(page_size=0)], {}, "field 'page_size' must be between 1 and 250"),
        ([coinbase(faults=[{"kind": "explode", "times": 1}])], {}, "field 'kind' must be one of"),
        ([coinbase(faults=[{"kind": "auth"}])], {}, "faults[0]: field 'times' is missing"),
        ([coinbase(faults=[{"kind": "auth", "times": 0}])], {}, "field 'times' must be"),
        (
            [coinbase(faults=[{"kind": "auth", "times": 1, "status": 500}])],
            {},
            "'status' do not apply to a 'auth' fault",
        ),
        (
            [coinbase(faults=[{"kind": "status_5xx", "times": 1, "status": 404}])],
            {},
            "field 'status' must be between 500 and 599",
        ),
        (
            [coinbase(faults=[{"kind": "malformed", "times": 1, "variant": "json"}])],
            {},
            "field 'variant' must be one of html, truncated, bad_amount, negative",
        ),
        (
            [coinbase(faults=[{"kind": "timeout", "times": 1, "seconds": "10"}])],
            {},
            "field 'seconds' must be a number",
        ),
        ([dydx(subaccount=128001)], {}, "field 'subaccount' must be between 0 and 128000"),
        ([dydx(address="dydx1-bad!")], {}, "field 'address' must be alphanumeric"),
        (
            [dydx(assets=[{"symbol": "USDC", "side": "LONG", "size": "0"}])],
            {},
            "field 'size' must be greater than zero",
        ),
        (
            [dydx(assets=[{"symbol": "USDC", "side": "UP", "size": "1"}])],
            {},
            "field 'side' must be one of LONG, SHORT",
        ),
        (
            [dydx(perpetuals=[{"market": "ETH/USD", "side": "LONG", "size": "1"}])],
            {},
            "field 'market' must be a dYdX ticker",
        ),
        (
            [
                dydx(
                    perpetuals=[
                        {"market": "ETH-USD", "side": "LONG", "size": "1"},
                        {"market": "ETH-USD", "side": "SHORT", "size": "1"},
                    ]
                )
            ],
            {},
            "duplicate perpetual market 'ETH-USD'",
        ),
        ([coinbase()], {"prices": {"BTC": 60000}}, "[prices]: field 'BTC' must be a decimal"),
        ([coinbase()], {"rate_limits": {"kraken2": {}}}, "field 'kraken2' is not a venue"),
        (
            [coinbase()],
            {"rate_limits": {"dydx": {"requests": 10}}},
            "field 'window_ms' is missing",
        ),
        ([coinbase(latency_ms=-5)], {}, "field 'latency_ms' must be between 0 and 600000"),
    ],
)
def test_invalid_scenarios_are_refused_naming_file_account_and_field(accounts, top, expected):
    """Each invalid field is refused with a message naming the source, account and field."""
    accounts = [{k: v for k, v in a.items() if v is not None} for a in accounts]
    with pytest.raises(ScenarioError) as info:
        parse(*accounts, **top)
    message = str(info.value)
    assert message.startswith("s.toml")
    assert expected in message


def test_amount_errors_do_not_repeat_the_amount():
    """A refused amount is named by field, never echoed (it may be a balance)."""
    with pytest.raises(ScenarioError) as info:
        parse(coinbase(balances=[{"currency": "BTC", "available": "-98765.4321"}]))
    assert "98765" not in str(info.value)


def test_private_key_is_refused_where_a_public_key_belongs(tmp_path: Path):
    """The sandbox holds public keys only: a private PEM file is not a public key."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    (tmp_path / "k.pem").write_bytes(pem)
    account = coinbase(public_key_file="k.pem")
    del account["public_key"]
    with pytest.raises(ScenarioError, match="public_key_file' is not a PEM public key"):
        parse_scenario({"accounts": [account]}, base_dir=tmp_path)


def test_load_scenario_resolves_key_files_beside_the_file(tmp_path: Path):
    """load_scenario reads TOML and resolves a relative public_key_file against its folder."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k.pub.pem").write_text(PUBLIC_PEM)
    (tmp_path / "s.toml").write_text(
        "[[accounts]]\n"
        'id = "a"\nvenue = "coinbase"\nkey_name = "k"\npublic_key_file = "keys/k.pub.pem"\n'
    )
    scenario = load_scenario(tmp_path / "s.toml")
    assert isinstance(scenario.accounts[0], CoinbaseAccount)
    assert scenario.source == str(tmp_path / "s.toml")


def test_load_scenario_refuses_bad_toml_and_missing_files(tmp_path: Path):
    """Unreadable or non-TOML files are a ScenarioError naming the file."""
    with pytest.raises(ScenarioError, match="cannot be read"):
        load_scenario(tmp_path / "absent.toml")
    (tmp_path / "bad.toml").write_text("accounts = [")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(tmp_path / "bad.toml")


# ---------------------------------------------------------------- runtime pieces


def test_fault_schedule_consumes_rules_in_order_then_passes():
    """times=2 then times=1: two of the first, one of the second, then none; reset restarts."""
    first = Fault(FaultKind.STATUS_5XX, times=2)
    second = Fault(FaultKind.AUTH, times=1)
    schedule = FaultSchedule([first, second])
    assert [schedule.take() for _ in range(4)] == [first, first, second, None]
    schedule.reset()
    assert schedule.take() is first


def test_a_none_rule_serves_its_requests_before_the_next_rules_fault():
    """kind none: the first request is served normally, the second reset, then all served."""
    through = Fault(FaultKind.NONE, times=1)
    reset = Fault(FaultKind.RESET, times=1)
    schedule = FaultSchedule([through, reset])
    assert [schedule.take() for _ in range(3)] == [None, reset, None]
    rules = [{"kind": "none", "times": 1}, {"kind": "reset", "times": 1}]
    parsed = parse(dydx(faults=rules))
    assert [f.kind for f in parsed.accounts[0].faults] == [FaultKind.NONE, FaultKind.RESET]


def test_fault_schedule_always_rule_never_runs_out():
    """A rule with times None applies to every request."""
    always = Fault(FaultKind.RESET, times=None)
    schedule = FaultSchedule([always])
    assert all(schedule.take() is always for _ in range(10))


def test_window_limiter_counts_per_key():
    """The fixed window allows ``requests`` per key and reports what remains."""
    limiter = WindowLimiter(RateLimit(requests=2, window_ms=60_000))
    verdicts = [limiter.hit("k1") for _ in range(3)]
    assert [v.allowed for v in verdicts] == [True, True, False]
    assert [v.remaining for v in verdicts] == [1, 0, 0]
    assert 0 < verdicts[2].reset_in_ms <= 60_000
    assert limiter.hit("k2").allowed


@pytest.mark.parametrize(
    ("claim", "ok"),
    [
        ("GET api.coinbase.com/api/v3/brokerage/accounts", True),
        ("GET 127.0.0.1:9000/api/v3/brokerage/accounts", True),
        ("GET http://127.0.0.1:9000/api/v3/brokerage/accounts", True),
        ("GET https://api.coinbase.com/api/v3/brokerage/accounts?limit=2", True),
        ("POST api.coinbase.com/api/v3/brokerage/accounts", False),
        ("GET api.coinbase.com/api/v3/brokerage/accounts/x", False),
        ("GET api.coinbase.com", False),
        ("GETapi.coinbase.com/api/v3/brokerage/accounts", False),
    ],
)
def test_uri_claim_matching_ignores_host_and_scheme(claim, ok):
    """The JWT uri must name the method and path; host, scheme and query are ignored."""
    assert uri_matches(claim, "GET", "/api/v3/brokerage/accounts") is ok


def test_coinbase_amounts_use_sixteen_decimals_when_they_fit():
    """Balances render like Coinbase's "0.5000000000000000", longer fractions untouched."""
    assert coinbase_amount(Decimal("0.5")) == "0.5000000000000000"
    assert coinbase_amount(Decimal(25000)) == "25000.0000000000000000"
    assert coinbase_amount(Decimal("1e-18")) == "0.000000000000000001"


def test_accounts_page_caps_limit_by_page_size_and_ends_with_empty_cursor():
    """limit is capped by page_size; cursors walk the list; the last page has cursor ""."""
    account = parse(
        coinbase(
            page_size=2,
            balances=[{"currency": c, "available": "1"} for c in ("A", "B", "C")],
        )
    ).accounts[0]
    assert isinstance(account, CoinbaseAccount)
    first = accounts_page(account, "250", None)
    assert (first["size"], first["has_next"], first["cursor"]) == (2, True, "2")
    last = accounts_page(account, None, first["cursor"])
    assert (last["size"], last["has_next"], last["cursor"]) == (1, False, "")
    single = accounts_page(account, "1", None)
    assert single["size"] == 1


def test_subaccount_json_signs_perps_and_computes_equity():
    """Perp sizes are signed by side; equity is cash plus perp notional at the marks."""
    scenario = parse(
        dydx(perpetuals=[{"market": "ETH-USD", "side": "SHORT", "size": "2"}]),
        prices={"ETH": "3000"},
    )
    account = scenario.accounts[0]
    assert isinstance(account, DydxAccount)
    body = subaccount_json(account, scenario.prices)["subaccount"]
    assert body["openPerpetualPositions"]["ETH-USD"]["size"] == "-2"
    assert body["equity"] == "-5900"  # 100 USDC − 2 × 3000
    assert body["assetPositions"]["USDC"]["assetId"] == "0"


def test_reset_without_transport_sends_headers_then_raises():
    """Without a reachable transport a reset starts a response and aborts it."""
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request"}

    with pytest.raises(ConnectionResetFault):
        asyncio.run(ResetConnection()({"type": "http"}, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start"]


def test_injected_reset_tracebacks_are_filtered_from_uvicorn_logs():
    """uvicorn's error line for a deliberate reset is dropped; other errors are kept."""
    fault = ConnectionResetFault("x")
    record = logging.LogRecord("uvicorn.error", 40, "f", 1, "m", None, (type(fault), fault, None))
    other = logging.LogRecord("uvicorn.error", 40, "f", 1, "m", None, None)
    assert not _RESET_FILTER.filter(record)
    assert _RESET_FILTER.filter(other)


# ---------------------------------------------------------------- the built-in data


def _roster() -> dict[str, Any]:
    return tomllib.loads(DEFAULT_ROSTER.read_text())


def _venue_totals(account: CoinbaseAccount | DydxAccount) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    if isinstance(account, CoinbaseAccount):
        for entry in account.entries:
            totals[entry.currency] = (
                totals.get(entry.currency, Decimal(0)) + entry.available + entry.hold
            )
        return totals
    for asset in account.assets:
        totals[asset.symbol] = asset.signed_size
    for perp in account.perpetuals:
        totals[f"{perp.market.removesuffix('-USD')}/USD:USDC"] = perp.signed_size
    return totals


def test_builtin_roster_follows_the_accounts_file_format():
    """roster.toml has [policy], [book] file book.json, [prices] strings, sandbox accounts."""
    roster = _roster()
    assert set(roster) == {"policy", "book", "prices", "accounts"}
    assert roster["book"] == {"source": "file", "path": "book.json"}
    assert all(isinstance(v, str) for v in roster["prices"].values())
    assert roster["policy"]["threshold_usd"] == "100"
    assert roster["policy"]["critical_usd"] == "10000"
    for account in roster["accounts"]:
        assert account["base_url"] == "http://127.0.0.1:9000"
        if account["exchange"] in {"coinbase", "kraken", "binance"}:
            assert account["api_key"].startswith("file:keys/")
            assert account["api_secret"].startswith("file:keys/")
        else:
            assert account["exchange"] == "dydx"
            assert isinstance(account["subaccount"], int)


def test_builtin_roster_keys_match_the_scenario():
    """Each roster key file names a scenario key and holds the private half of its public key."""
    scenario = load_scenario(DEFAULT_SCENARIO)
    for entry in _roster()["accounts"]:
        account = scenario.account(entry["id"])
        if entry["exchange"] == "dydx":
            assert isinstance(account, DydxAccount)
            assert (account.address, account.subaccount) == (
                entry["address"],
                entry["subaccount"],
            )
            continue
        folder = DEFAULT_ROSTER.parent
        if entry["exchange"] in {"kraken", "binance"}:
            key = (folder / entry["api_key"].removeprefix("file:")).read_text().strip()
            secret = (folder / entry["api_secret"].removeprefix("file:")).read_text().strip()
            assert isinstance(account, KrakenAccount | BinanceAccount)
            assert (key, secret) == (account.api_key, account.api_secret)
            continue
        assert isinstance(account, CoinbaseAccount)
        name = (folder / entry["api_key"].removeprefix("file:")).read_text().strip()
        assert name == account.key_name
        private = serialization.load_pem_private_key(
            (folder / entry["api_secret"].removeprefix("file:")).read_bytes(), password=None
        )
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.public_key().public_numbers() == account.public_key.public_numbers()  # type: ignore[union-attr]
    assert "sandbox-only" in (DATA_DIR / "keys" / "README").read_text().lower()


def test_builtin_data_yields_every_status():
    """Against the built-in book, cb-main is SUCCESS, dydx-0 WARNING, dydx-1 CRITICAL, and
    cb-desk2 always fails (ERROR) while cb-main's faults are fewer than the retries."""
    roster = _roster()
    scenario = load_scenario(DEFAULT_SCENARIO)
    book = json.loads((DATA_DIR / roster["book"]["path"]).read_text(), parse_float=Decimal)
    tolerances = {k: Decimal(v) for k, v in roster["policy"]["tolerance"].items()}
    policy = Policy(
        threshold_usd=Decimal(roster["policy"]["threshold_usd"]),
        critical_usd=Decimal(roster["policy"]["critical_usd"]),
        default_tolerance=tolerances.pop("default"),
        tolerances=tolerances,
    )
    prices = PriceTable({k: Decimal(v) for k, v in roster["prices"].items()})
    assert dict(scenario.prices) == dict(prices.marks)

    def status(account_id: str) -> tuple[Status, tuple[Any, ...]]:
        account = scenario.account(account_id)
        assert isinstance(account, CoinbaseAccount | DydxAccount)
        local = {k: Decimal(v) for k, v in book["accounts"][account_id].items()}
        found = compare(local, _venue_totals(account), policy, prices)
        return Status.of_severity(max((d.severity for d in found), default=None)), found

    main_status, main_found = status("cb-main")
    assert main_status is Status.SUCCESS
    assert [(d.asset, d.type) for d in main_found] == [("USDC", DiscrepancyType.PRECISION)]
    main = scenario.account("cb-main")
    assert isinstance(main, CoinbaseAccount)
    assert main.page_size is not None
    assert len(main.entries) > 2 * main.page_size
    assert {e.type for e in main.entries} >= {"ACCOUNT_TYPE_VAULT"}
    assert any(e.hold > 0 for e in main.entries)
    transient = sum(f.times or 99 for f in main.faults)
    assert 0 < transient <= 3  # RECONCILIATION_RETRY_COUNT's default

    warning_status, warning_found = status("dydx-0")
    assert warning_status is Status.WARNING
    assert [(d.asset, d.severity) for d in warning_found] == [("USDC", Severity.WARNING)]

    critical_status, critical_found = status("dydx-1")
    assert critical_status is Status.CRITICAL
    (missing,) = critical_found
    assert (missing.asset, missing.type, missing.missing_from) == (
        "BTC/USD:USDC",
        DiscrepancyType.MISSING,
        Side.LOCAL,
    )
    assert missing.value_usd == Decimal(30000)

    desk = scenario.account("cb-desk2")
    assert [(f.kind, f.status, f.times) for f in desk.faults] == [(FaultKind.STATUS_5XX, 503, None)]
    assert "cb-desk2" in book["accounts"]
