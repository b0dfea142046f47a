"""The TOML accounts file and secret references: what is accepted, and how refusals read."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from infra.config import (
    ConfigError,
    FileBookConfig,
    HttpBookConfig,
    Roster,
    SecretRef,
    SqlBookConfig,
    load_roster,
    load_settings,
    parse_secret_ref,
    resolve,
)

SECRET = "MHcCAQEEIIsecretmaterialthatmustneverbeprinted"

BOOK = """
[book]
source = "file"
path = "book.json"
"""

COINBASE = """
[[accounts]]
id = "cb-main"
exchange = "coinbase"
api_key = "env:CB_KEY"
api_secret = "env:CB_SECRET"
"""

FULL = """
[policy]
threshold_usd = "50"
critical_usd = "20000"
[policy.tolerance]
default = "0.0001"
USD = "0.01"

[book]
source = "file"
path = "desk/book.json"

[prices]
BTC = "60000"
ETH = "3000.25"

[[accounts]]
id = "cb-main"
exchange = "coinbase"
base_url = "http://127.0.0.1:9000"
api_key = "env:CB_MAIN_KEY_NAME"
api_secret = "file:secrets/cb.pem"
asset_map = { "ETH.F" = "ETH" }
rate_limit = { per_second = "15", burst = 20 }

[[accounts]]
id = "dydx-0"
exchange = "dydx"
address = "dydx1abc"
subaccount = 2

[[accounts]]
id = "kr-1"
exchange = "kraken"
api_key = "env:KR_KEY"
api_secret = "env:KR_SECRET"

[[accounts]]
id = "bn-1"
exchange = "binance"
base_url = "https://api.binance.com/"
api_key = "env:BN_KEY"
api_secret = "env:BN_SECRET"
rate_limit = { per_second = 10, burst = 5 }

[[accounts]]
id = "okx-1"
exchange = "ccxt:okx"

[[accounts]]
id = "sim-1"
exchange = "sandbox"
"""


def _write(tmp_path: Path, text: str, name: str = "accounts.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Roster:
    return load_roster(_write(tmp_path, text), load_settings(environ or {}))


def _refusal(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text, environ)
    return caught.value


def test_full_roster_is_read_into_frozen_values(tmp_path: Path) -> None:
    """Every section of the DESIGN §2 example becomes typed, immutable values."""
    roster = _load(tmp_path, FULL)
    assert roster.source == tmp_path / "accounts.toml"
    assert [a.id for a in roster.accounts] == [
        "cb-main",
        "dydx-0",
        "kr-1",
        "bn-1",
        "okx-1",
        "sim-1",
    ]
    cb = roster.account("cb-main")
    assert cb.exchange == "coinbase"
    assert cb.base_url == "http://127.0.0.1:9000"
    assert cb.api_key == SecretRef("env", "CB_MAIN_KEY_NAME")
    assert cb.api_secret == SecretRef("file", "secrets/cb.pem")
    assert dict(cb.asset_map) == {"ETH.F": "ETH"}
    assert cb.rate_limit is not None
    assert cb.rate_limit.per_second == Decimal(15)
    assert cb.rate_limit.burst == 20
    dydx = roster.account("dydx-0")
    assert (dydx.address, dydx.subaccount, dydx.api_key, dydx.api_secret) == (
        "dydx1abc",
        2,
        None,
        None,
    )
    assert roster.account("bn-1").base_url == "https://api.binance.com"
    assert roster.account("okx-1").exchange == "ccxt:okx"
    assert roster.account("sim-1").subaccount == 0
    assert roster.prices.source == "static"
    assert roster.prices.table.usd("BTC") == Decimal(60000)
    assert roster.prices.table.usd("ETH") == Decimal("3000.25")
    assert roster.prices.table.usd("USDC") == Decimal(1)
    with pytest.raises(TypeError):
        cb.asset_map["X"] = "Y"  # type: ignore[index]
    with pytest.raises(KeyError):
        roster.account("nope")


def test_relative_book_path_is_relative_to_the_accounts_file(tmp_path: Path) -> None:
    """[book] path is resolved against the folder of the accounts file, not the cwd."""
    roster = _load(tmp_path, FULL)
    assert roster.book == FileBookConfig(path=tmp_path / "desk" / "book.json")


def test_absolute_book_path_is_kept(tmp_path: Path) -> None:
    """An absolute [book] path is used as written."""
    target = tmp_path / "elsewhere" / "book.json"
    text = f'[book]\nsource = "file"\npath = "{target}"\n' + COINBASE
    assert _load(tmp_path, text).book == FileBookConfig(path=target)


def test_policy_from_the_file_overrides_the_environment(tmp_path: Path) -> None:
    """[policy] thresholds and tolerances win over the environment's."""
    policy = _load(tmp_path, FULL, {"RECONCILIATION_THRESHOLD_USD": "1"}).policy
    assert policy.threshold_usd == Decimal(50)
    assert policy.critical_usd == Decimal(20000)
    assert policy.tolerance("USD") == Decimal("0.01")
    assert policy.tolerance("BTC") == Decimal("0.0001")


def test_without_policy_the_environment_defaults_apply(tmp_path: Path) -> None:
    """No [policy]: the env thresholds and a 0.00000001 tolerance for every asset."""
    policy = _load(tmp_path, BOOK + COINBASE, {"RECONCILIATION_THRESHOLD_USD": "20"}).policy
    assert policy.threshold_usd == Decimal(20)
    assert policy.critical_usd == Decimal(2000)
    assert policy.tolerance("USD") == Decimal("0.00000001")


def test_critical_defaults_to_100_times_the_effective_threshold(tmp_path: Path) -> None:
    """A file threshold without a critical level gives 100 × that threshold."""
    text = '[policy]\nthreshold_usd = "7.5"\n' + BOOK + COINBASE
    assert _load(tmp_path, text).policy.critical_usd == Decimal(750)


def test_an_explicit_environment_critical_is_kept(tmp_path: Path) -> None:
    """RECONCILIATION_CRITICAL_USD applies when the file sets only the threshold."""
    text = '[policy]\nthreshold_usd = "10"\n' + BOOK + COINBASE
    policy = _load(tmp_path, text, {"RECONCILIATION_CRITICAL_USD": "300"}).policy
    assert policy.critical_usd == Decimal(300)


def test_critical_below_threshold_is_refused(tmp_path: Path) -> None:
    """A critical level under the threshold is refused, naming the field."""
    text = '[policy]\nthreshold_usd = "500"\ncritical_usd = "400"\n' + BOOK + COINBASE
    error = _refusal(tmp_path, text)
    assert "field 'policy.critical_usd': must be at least threshold_usd" in str(error)


def test_toml_integers_are_exact_amounts(tmp_path: Path) -> None:
    """An unquoted TOML integer is an exact amount."""
    text = "[policy]\nthreshold_usd = 100\n" + BOOK + "[prices]\nBTC = 60000\n" + COINBASE
    roster = _load(tmp_path, text)
    assert roster.policy.threshold_usd == Decimal(100)
    assert roster.prices.marks["BTC"] == Decimal(60000)


@pytest.mark.parametrize(
    ("snippet", "field"),
    [
        ("[policy]\nthreshold_usd = 100.5\n", "policy.threshold_usd"),
        ("[policy.tolerance]\nUSD = 0.01\n", "policy.tolerance.USD"),
        ("[prices]\nETH = 3000.25\n", "prices.ETH"),
        ("[prices]\nBTC = inf\n", "prices.BTC"),
    ],
)
def test_toml_floats_are_refused(tmp_path: Path, snippet: str, field: str) -> None:
    """A TOML float is refused by name, telling to quote the number."""
    error = _refusal(tmp_path, snippet + BOOK + COINBASE)
    assert str(error) == (
        f"{tmp_path / 'accounts.toml'}: field {field!r}: "
        'a TOML float is not exact; quote the number (e.g. "0.01")'
    )


def test_toml_float_in_rate_limit_names_the_account(tmp_path: Path) -> None:
    """A float rate is refused with the account and the nested field named."""
    text = BOOK + COINBASE + "rate_limit = { per_second = 1.5, burst = 2 }\n"
    error = _refusal(tmp_path, text)
    assert "account 'cb-main': field 'rate_limit.per_second': a TOML float" in str(error)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"abc"', "not a decimal number"),
        ('"NaN"', "not finite"),
        ('"Infinity"', "not finite"),
        ('"1e400"', "out of range"),
        ('"-5"', "negative"),
        ("true", "decimal string"),
        ("[1]", "decimal string"),
    ],
)
def test_bad_amounts_are_refused(tmp_path: Path, value: str, reason: str) -> None:
    """Non-numeric, NaN, Infinity, absurd or negative amounts are refused, naming the field."""
    error = _refusal(tmp_path, f"[prices]\nBTC = {value}\n" + BOOK + COINBASE)
    assert str(error).startswith(f"{tmp_path / 'accounts.toml'}: field 'prices.BTC': ")
    assert reason in str(error)


def test_unknown_exchange_is_refused(tmp_path: Path) -> None:
    """An exchange outside the supported list names the file, account and field."""
    text = BOOK + '[[accounts]]\nid = "x-1"\nexchange = "coinbse"\n'
    error = _refusal(tmp_path, text)
    assert str(error) == (
        f"{tmp_path / 'accounts.toml'}: account 'x-1': field 'exchange': unknown exchange "
        "'coinbse'; expected one of coinbase, dydx, kraken, binance, sandbox or ccxt:<exchange id>"
    )


@pytest.mark.parametrize("exchange", ["ccxt:", "ccxt:OKX", "ccxt:ok x", "CCXT:okx"])
def test_malformed_ccxt_exchange_is_refused(tmp_path: Path, exchange: str) -> None:
    """ccxt:<id> needs a lowercase ccxt exchange id."""
    error = _refusal(tmp_path, BOOK + f'[[accounts]]\nid = "c"\nexchange = "{exchange}"\n')
    assert "account 'c': field 'exchange': unknown exchange" in str(error)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    """Two accounts with one id are refused, naming the id and both positions."""
    error = _refusal(tmp_path, BOOK + COINBASE + COINBASE)
    assert str(error) == (
        f"{tmp_path / 'accounts.toml'}: account 'cb-main': field 'id': duplicate id"
        " (accounts[0] and accounts[1])"
    )


def test_literal_secret_is_refused_without_echoing_it(tmp_path: Path) -> None:
    """A secret written into the file is refused; the message does not repeat it."""
    text = BOOK + COINBASE.replace('"env:CB_SECRET"', f'"{SECRET}"')
    error = _refusal(tmp_path, text)
    assert str(error) == (
        f"{tmp_path / 'accounts.toml'}: account 'cb-main': field 'api_secret': "
        "a literal secret is not allowed; use env:NAME or file:/path"
    )
    assert SECRET not in str(error)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BOOK + '[[accounts]]\nexchange = "sandbox"\n', "accounts[0]: field 'id': is required"),
        (BOOK + '[[accounts]]\nid = "a"\n', "account 'a': field 'exchange': is required"),
        (
            BOOK + '[[accounts]]\nid = "cb"\nexchange = "coinbase"\napi_key = "env:K"\n',
            "account 'cb': field 'api_secret': is required for exchange 'coinbase'",
        ),
        (
            BOOK + '[[accounts]]\nid = "kr"\nexchange = "kraken"\napi_secret = "env:S"\n',
            "account 'kr': field 'api_key': is required for exchange 'kraken'",
        ),
        (
            BOOK + '[[accounts]]\nid = "d"\nexchange = "dydx"\n',
            "account 'd': field 'address': is required for exchange 'dydx'",
        ),
        (COINBASE, "field 'book': is required"),
        (BOOK, "field 'accounts': is required"),
        ("accounts = []\n" + BOOK, "field 'accounts': needs at least one [[accounts]] entry"),
        ('[book]\nsource = "file"\n' + COINBASE, "field 'book.path': is required when source"),
        ("[book]\npath = 'b.json'\n" + COINBASE, "field 'book.source': is required"),
    ],
)
def test_missing_fields_are_named(tmp_path: Path, text: str, expected: str) -> None:
    """A missing field is refused, naming the account (or its position) and the field."""
    assert f"{tmp_path / 'accounts.toml'}: {expected}" in str(_refusal(tmp_path, text))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:9000/api/v3", "no path"),
        ("http://127.0.0.1:9000?x=1", "no query"),
        ("http://127.0.0.1:9000/#frag", "no query or fragment"),
        ("ftp://127.0.0.1:9000", "scheme http or https"),
        ("127.0.0.1:9000", "scheme http or https"),
        ("http://", "the host is missing"),
        ("http://:9000", "the host is missing"),
        ("http://user:pw@127.0.0.1", "credentials"),
        ("http://127.0.0.1:99999", "not a valid URL"),
        ("http://[::1", "not a valid URL"),
    ],
)
def test_bad_base_url_is_refused(tmp_path: Path, url: str, reason: str) -> None:
    """base_url is scheme://host[:port] over http or https, nothing more."""
    text = BOOK + COINBASE + f'base_url = "{url}"\n'
    error = str(_refusal(tmp_path, text))
    assert error.startswith(
        f"{tmp_path / 'accounts.toml'}: account 'cb-main': field 'base_url': "
        "must be scheme://host[:port]"
    )
    assert reason in error


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("https://indexer.dydx.trade/", "https://indexer.dydx.trade"),
        ("HTTPS://API.Kraken.com", "https://api.kraken.com"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_good_base_url_is_normalised(tmp_path: Path, url: str, expected: str) -> None:
    """A valid base_url is kept as scheme://host[:port], without a trailing slash."""
    roster = _load(tmp_path, BOOK + COINBASE + f'base_url = "{url}"\n')
    assert roster.account("cb-main").base_url == expected


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("typo = 1\n" + BOOK + COINBASE, "typo"),
        ('[policy]\nthreshold = "1"\n' + BOOK + COINBASE, "policy.threshold"),
        (BOOK + 'paht = "x"\n' + COINBASE, "book.paht"),
        (BOOK + COINBASE + 'api_keys = "env:X"\n', "api_keys"),
        (BOOK + COINBASE + 'rate_limit = { per_second = "1", burst = 1, cap = 2 }\n', "cap"),
    ],
)
def test_unknown_keys_are_refused(tmp_path: Path, text: str, field: str) -> None:
    """An unknown key anywhere is refused as a likely typo, naming it."""
    error = str(_refusal(tmp_path, text))
    assert f"field {field!r}: unknown key" in error or f"field 'rate_limit.{field}'" in error


def test_every_problem_is_listed_in_one_error(tmp_path: Path) -> None:
    """All problems of the file come back together, one line each."""
    text = (
        BOOK
        + COINBASE
        + COINBASE.replace('"env:CB_SECRET"', f'"{SECRET}"')
        + '[[accounts]]\nid = "d"\nexchange = "dydx"\napi_key = "env:X"\n'
        + '[[accounts]]\nexchange = "nope"\n'
    )
    error = _refusal(tmp_path, text)
    prefix = f"{tmp_path / 'accounts.toml'}: "
    assert sorted(error.problems) == sorted(
        [
            prefix + "account 'cb-main' (accounts[1]): field 'api_secret': "
            "a literal secret is not allowed; use env:NAME or file:/path",
            prefix + "account 'd': field 'api_key': is not used by exchange 'dydx', "
            "which needs no secrets",
            prefix + "account 'd': field 'address': is required for exchange 'dydx'",
            prefix + "accounts[3]: field 'id': is required",
            prefix + "accounts[3]: field 'exchange': unknown exchange 'nope'; expected one of "
            "coinbase, dydx, kraken, binance, sandbox or ccxt:<exchange id>",
            prefix + "account 'cb-main': field 'id': duplicate id (accounts[0] and accounts[1])",
        ]
    )
    assert SECRET not in str(error)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("subaccount = -1\n", "field 'subaccount': must be greater than or equal to 0"),
        ("subaccount = true\n", "field 'subaccount': must be a valid integer"),
        ("subaccount = 1.0\n", "field 'subaccount': must be a valid integer"),
        ('address = ""\n', "field 'address': must not be empty"),
    ],
)
def test_bad_dydx_fields_are_refused(tmp_path: Path, extra: str, expected: str) -> None:
    """subaccount is an integer ≥ 0 and address a non-empty string."""
    text = BOOK + '[[accounts]]\nid = "d"\nexchange = "dydx"\naddress = "dydx1x"\n'
    text = text.replace('address = "dydx1x"\n', extra) if "address" in extra else text + extra
    assert expected in str(_refusal(tmp_path, text))


def test_address_is_refused_where_the_venue_has_none(tmp_path: Path) -> None:
    """An address or subaccount on a Coinbase account is refused as misplaced."""
    error = str(_refusal(tmp_path, BOOK + COINBASE + 'address = "x"\nsubaccount = 0\n'))
    assert "field 'address': is not used by exchange 'coinbase'" in error
    assert "field 'subaccount': is not used by exchange 'coinbase'" in error


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (
            '{ per_second = "0", burst = 1 }',
            "field 'rate_limit.per_second': must be greater than 0",
        ),
        ('{ per_second = "1", burst = 0 }', "field 'rate_limit.burst': must be greater than 0"),
        ('{ per_second = "1" }', "field 'rate_limit.burst': is required"),
        ('"fast"', "field 'rate_limit': must be a table"),
    ],
)
def test_bad_rate_limit_is_refused(tmp_path: Path, rate: str, expected: str) -> None:
    """rate_limit needs per_second > 0 and an integer burst > 0."""
    assert expected in str(_refusal(tmp_path, BOOK + COINBASE + f"rate_limit = {rate}\n"))


def test_bad_asset_map_is_refused(tmp_path: Path) -> None:
    """asset_map maps codes to non-empty code strings."""
    assert "field 'asset_map.XXBT': must be a valid string" in str(
        _refusal(tmp_path, BOOK + COINBASE + "asset_map = { XXBT = 1 }\n")
    )
    assert "field 'asset_map': asset codes must not be empty" in str(
        _refusal(tmp_path, BOOK + COINBASE + 'asset_map = { XXBT = "" }\n')
    )


def test_http_book(tmp_path: Path) -> None:
    """An http book keeps its URL, path and query included."""
    text = '[book]\nsource = "http"\nurl = "http://pm.internal/balances"\n' + COINBASE
    assert _load(tmp_path, text).book == HttpBookConfig(url="http://pm.internal/balances")


def test_sql_book_by_reference(tmp_path: Path) -> None:
    """A sql book's URL may be a secret reference; query and upsert are kept."""
    text = (
        '[book]\nsource = "sql"\nurl = "env:BOOK_DB"\n'
        'query = "SELECT asset, amount FROM balances WHERE account_id = :account_id"\n'
        'upsert = "INSERT INTO balances VALUES (:account_id, :asset, :amount)"\n' + COINBASE
    )
    book = _load(tmp_path, text).book
    assert isinstance(book, SqlBookConfig)
    assert book.url == SecretRef("env", "BOOK_DB")
    assert book.query.endswith(":account_id")
    assert book.upsert is not None


@pytest.mark.parametrize(
    ("book", "expected"),
    [
        (
            f'source = "sql"\nurl = "postgresql+psycopg://u:{SECRET}@db/x"\n'
            'query = "SELECT 1 WHERE a = :account_id"\n',
            "field 'book.url': a literal password is not allowed",
        ),
        (
            'source = "sql"\nurl = "sqlite:///b.db"\nquery = "SELECT asset, amount FROM b"\n',
            "field 'book.query': must select by the :account_id parameter",
        ),
        ('source = "http"\nurl = "ftp://pm/x"\n', "field 'book.url': must be an http://"),
        (
            'source = "http"\nurl = "http://pm/x"\npath = "b.json"\n',
            "field 'book.path': is not used when source = 'http'",
        ),
        ('source = "kafka"\n', "field 'book.source': must be 'file', 'http' or 'sql'"),
    ],
)
def test_bad_book_sections_are_refused(tmp_path: Path, book: str, expected: str) -> None:
    """The [book] section is checked against its source, never echoing a password."""
    error = str(_refusal(tmp_path, "[book]\n" + book + COINBASE))
    assert expected in error
    assert SECRET not in error


def test_live_prices_from_coinbase(tmp_path: Path) -> None:
    """[prices] source = "coinbase" with an optional base_url and fixed marks beside it."""
    text = BOOK + '[prices]\nsource = "coinbase"\nbase_url = "http://127.0.0.1:9100"\n'
    prices = _load(tmp_path, text + 'XYZ = "2"\n' + COINBASE).prices
    assert (prices.source, prices.base_url, dict(prices.marks)) == (
        "coinbase",
        "http://127.0.0.1:9100",
        {"XYZ": Decimal(2)},
    )


def test_prices_base_url_needs_the_live_source(tmp_path: Path) -> None:
    """base_url in [prices] without source = "coinbase" is refused as unused."""
    error = _refusal(tmp_path, BOOK + '[prices]\nbase_url = "http://x"\n' + COINBASE)
    assert "field 'prices.base_url': is only used with source = 'coinbase'" in str(error)


def test_invalid_toml_and_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    """A file that is not TOML, not UTF-8, or not there is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match=r"accounts\.toml: not valid TOML"):
        _load(tmp_path, "[book\n")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=r"binary\.toml: the accounts file is not UTF-8"):
        load_roster(binary, load_settings({}))
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the accounts file"):
        load_roster(tmp_path / "missing.toml", load_settings({}))


# --- secret references ----------------------------------------------------------------------


def test_secret_reference_parses_and_prints_only_the_reference() -> None:
    """env:NAME and file:/path parse; repr and str show the reference only."""
    ref = parse_secret_ref("env:CB_KEY")
    assert ref == SecretRef("env", "CB_KEY")
    assert str(ref) == "env:CB_KEY"
    assert repr(ref) == "SecretRef('env:CB_KEY')"
    assert parse_secret_ref("file:/run/secrets/cb") == SecretRef("file", "/run/secrets/cb")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SECRET, "a literal secret is not allowed; use env:NAME or file:/path"),
        ("vault:" + SECRET, "a literal secret is not allowed; use env:NAME or file:/path"),
        ("env:", "env: needs an environment variable name (letters, digits, _)"),
        ("env:1" + SECRET, "env: needs an environment variable name (letters, digits, _)"),
        ("env:A-B", "env: needs an environment variable name (letters, digits, _)"),
        ("file:", "file: needs a path"),
    ],
)
def test_bad_secret_references_are_refused_without_echo(text: str, expected: str) -> None:
    """Anything but env:NAME or file:path is refused with a message that never repeats it."""
    with pytest.raises(ConfigError) as caught:
        parse_secret_ref(text)
    assert str(caught.value) == expected


def test_resolve_env_and_file_secrets(tmp_path: Path) -> None:
    """env: reads the environment; file: reads the file relative to base_dir, one newline off."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "key").write_text(f"{SECRET}\n", encoding="utf-8")
    (tmp_path / "pem").write_text("line1\nline2\n\n", encoding="utf-8")
    assert resolve(SecretRef("env", "K"), environ={"K": SECRET}, base_dir=tmp_path) == SECRET
    assert resolve(parse_secret_ref("file:secrets/key"), environ={}, base_dir=tmp_path) == SECRET
    absolute = parse_secret_ref(f"file:{tmp_path / 'pem'}")
    assert resolve(absolute, environ={}, base_dir=Path("/nowhere")) == "line1\nline2\n"


def test_unresolvable_secrets_name_the_reference(tmp_path: Path) -> None:
    """A missing variable, missing file or empty secret names the reference only."""
    with pytest.raises(ConfigError, match=r"^env:NOPE: the environment variable is not set$"):
        resolve(SecretRef("env", "NOPE"), environ={}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^file:absent: cannot read the file"):
        resolve(SecretRef("file", "absent"), environ={}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"^env:E: the secret is empty$"):
        resolve(SecretRef("env", "E"), environ={"E": ""}, base_dir=tmp_path)


def test_roster_checks_every_secret_relative_to_its_folder(tmp_path: Path) -> None:
    """check_secrets resolves file: against the roster's folder and lists each failure."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "cb.pem").write_text(SECRET, encoding="utf-8")
    roster = _load(tmp_path, FULL)
    cb = roster.account("cb-main")
    assert cb.api_secret is not None
    assert roster.resolve_secret(cb.api_secret, {}) == SECRET
    environ = {"CB_MAIN_KEY_NAME": SECRET, "KR_KEY": SECRET, "KR_SECRET": SECRET}
    with pytest.raises(ConfigError) as caught:
        roster.check_secrets(environ)
    assert caught.value.problems == (
        f"{roster.source}: account 'bn-1': field 'api_key': env:BN_KEY: "
        "the environment variable is not set",
        f"{roster.source}: account 'bn-1': field 'api_secret': env:BN_SECRET: "
        "the environment variable is not set",
    )
    roster.check_secrets({**environ, "BN_KEY": "k", "BN_SECRET": "s"})
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(roster)
