"""Fuzz tests (hypothesis) of the loaders: the TOML accounts file, the ``RECONCILIATION_*``
settings, the secret references, the book document and the sandbox scenario.

Any input ends in the loaded value or the loader's named error (ConfigError, BookError,
ScenarioError), never another exception; no error message repeats an amount or a secret
planted in the input.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from hypothesis import event, example, given
from hypothesis import strategies as st

from domain.report import ErrorKind
from infra.book.document import BookDocument, BookError, parse_book_json
from infra.config import ConfigError, Roster, Settings, load_roster, load_settings
from infra.config.settings import env_name
from infra.sandbox.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from tests.unit.test_fuzz_parsers import (
    AMOUNT_JUNK_TEXT,
    EDGE_BODIES,
    FUZZ,
    FUZZ_SMALL,
    JSON_VALUES,
    JUNK,
    PLANTED_AMOUNT,
    PLANTED_SECRET,
    DupKeys,
    Raw,
    amount_texts,
    amounts,
    assert_clean,
    dumped,
    mutated,
    rendered,
)

# --------------------------------------------------------------------------- TOML rendering


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string."""
    out = []
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """``value`` as an inline TOML value; None (which TOML lacks) becomes an empty table."""
    if isinstance(value, Raw):
        return value.text
    if value is None:
        return "{}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    pairs = value.pairs if isinstance(value, DupKeys) else tuple(value.items())
    return "{" + ", ".join(f"{toml_string(str(k))} = {toml_value(v)}" for k, v in pairs) + "}"


def _pairs(value: Any) -> tuple[tuple[str, Any], ...]:
    return value.pairs if isinstance(value, DupKeys) else tuple(value.items())


def _is_table(value: Any) -> bool:
    return isinstance(value, dict | DupKeys)


def toml_document(document: Any, *, sections: bool) -> str:
    """A whole TOML file: ``key = value`` lines, or ``[table]``/``[[array]]`` sections."""
    if not _is_table(document):
        return f"root = {toml_value(document)}\n"
    lines: list[str] = []
    later: list[str] = []
    for key, value in _pairs(document):
        name = toml_string(str(key))
        if sections and _is_table(value):
            later.append(f"[{name}]")
            later.extend(f"{toml_string(str(k))} = {toml_value(v)}" for k, v in _pairs(value))
        elif sections and isinstance(value, list) and value and all(map(_is_table, value)):
            for item in value:
                later.append(f"[[{name}]]")
                later.extend(f"{toml_string(str(k))} = {toml_value(v)}" for k, v in _pairs(item))
        else:
            lines.append(f"{name} = {toml_value(value)}")
    return "\n".join([*lines, *later]) + "\n"


#: Tokens that tomllib reads into values no roster field takes (or that it refuses).
TOML_RAW: Final = (
    "1979-05-27T07:32:00Z",
    "1979-05-27",
    "07:32:00",
    "1e400",
    "-1e400",
    "inf",
    "nan",
    "987654.321",
    "9" * 400,
    "-" + "9" * 400,
    "0x7fffffffffffffff",
    "0o777",
    "0b1",
    "[[[[]]]]",
    "{a = {b = {c = {}}}}",
    "'literal'",
    "'''multi\nline'''",
)
TOML_JUNK: Final = st.one_of(JUNK, st.sampled_from(TOML_RAW).map(Raw))
#: Raw TOML texts that stress the decoder.
EDGE_TOML: Final = (
    "",
    "a = " + "[" * 100_000,
    "a = " + "[" * 2_000 + "]" * 2_000,
    "a = " + "{b = " * 2_000 + "1" + "}" * 2_000,
    "a = " + "9" * 5_000,
    "a = 0x" + "f" * 5_000,
    "[book]\nsource = 'file'\npath = 'b.json'\n[[accounts]]\nid = 'a'\nexchange = 'dydx'\n"
    "address = 'dydx1a'\nsubaccount = " + "9" * 5_000 + "\n",
    "\ufeffa = 1",
    "a = 1\na = 2",
    'a = "\\u0000"',
    'a = "\\uD800"',
    "a = 1e400",
    "[[accounts]]\n" * 500,
)


@st.composite
def toml_texts(draw: st.DrawFn, documents: st.SearchStrategy[Any]) -> str:
    """A document of ``documents``, mutated, rendered as TOML, sometimes with its text broken."""
    document = draw(mutated(documents, TOML_JUNK))
    text = toml_document(document, sections=draw(st.booleans()))
    if draw(st.integers(0, 4)) == 0:
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 12)))
        patch = draw(st.sampled_from(("", "[", "]", "{", "=", '"', "\n", "#", "\\", "'''", "é")))
        text = text[:start] + patch + text[end:]
    return text


def toml_files(documents: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """File contents: near-valid TOML documents, arbitrary text and bytes, decoder edges."""
    near_valid = toml_texts(documents).map(lambda text: text.encode("utf-8"))
    return st.one_of(
        near_valid,
        near_valid,
        near_valid,
        st.text(max_size=200).map(lambda text: text.encode("utf-8")),
        st.binary(max_size=200),
        st.sampled_from(EDGE_TOML).map(lambda text: text.encode("utf-8")),
        st.just(b"a = '\xff\xfe'\n"),
    )


def assert_config_error(error: ConfigError) -> None:
    """A configuration error: kind config, at least one problem, no planted amount or secret."""
    assert error.kind is ErrorKind.CONFIG
    assert error.problems
    assert_clean(str(error))


def assert_malformed_book(error: BookError) -> None:
    """A book error of a bad document: kind malformed, no planted amount."""
    assert error.kind is ErrorKind.MALFORMED
    assert_clean(str(error))


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a book, key and secret files the fuzzed documents may refer to."""
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "book.json").write_text('{"accounts": {}}')
    (folder / "keys").mkdir()
    (folder / "keys" / "cb.name").write_text("organizations/o/apiKeys/k\n")
    (folder / "keys" / "empty").write_text("")
    (folder / "keys" / "latin1").write_bytes(b"\xff\xfe secret")
    (folder / "cb.pub.pem").write_bytes(PUBLIC_PEM)
    (folder / "kraken.secret").write_text(KRAKEN_SCENARIO_SECRET + "\n")
    (folder / "binance.secret").write_text(PLANTED_SECRET)
    (folder / "not-ascii.secret").write_bytes("é".encode())
    return folder


# --------------------------------------------------------------------------- settings

SETTINGS: Final = load_settings({})

#: Values worth trying per settings field (plus arbitrary text for every field).
SETTING_VALUES: Final[Mapping[str, tuple[str, ...]]] = {
    "enabled": ("true", "false", "1", "0", "yes", "TRUE", "maybe"),
    "interval_seconds": ("60", "0", "-1", "1e400", "nan", "inf", "1_000", "0.5", "9" * 5000),
    "threshold_usd": ("100", "0", PLANTED_AMOUNT, *AMOUNT_JUNK_TEXT),
    "critical_usd": ("10000", "1", PLANTED_AMOUNT, *AMOUNT_JUNK_TEXT),
    "retry_count": ("3", "11", "-1", "3.0", "9" * 5000, "0x3"),
    "timeout_seconds": ("10", "0", "1e-300", "1e400"),
    "database_url": (
        "sqlite:///recon.db",
        f"postgresql://u:{PLANTED_SECRET}@h/db",
        PLANTED_SECRET,
        " ",
    ),
    "broker_url": (f"redis://:{PLANTED_SECRET}@h:6379/0", PLANTED_SECRET, "memory://"),
    "result_backend": (f"redis://:{PLANTED_SECRET}@h:6379/1", PLANTED_SECRET),
    "accounts_file": ("/tmp/accounts.toml", "\x00", "a" * 5000, "~"),
    "webhook_url": (
        f"https://hooks.slack.com/services/{PLANTED_SECRET}",
        PLANTED_SECRET,
        "ftp://x",
        "http://",
    ),
    "log_level": ("debug", "INFO", "verbose", " warning "),
    "webhook_secret": (PLANTED_SECRET, " ", "\t"),
    "confirm_delay_seconds": ("0", "-0.1", "5", "nan"),
    "operator_tokens": (
        f"alice={PLANTED_SECRET}",
        f"alice={PLANTED_SECRET},alice=x",
        f"={PLANTED_SECRET}",
        f"alice{PLANTED_SECRET}",
        f"alice={PLANTED_SECRET},,bob=y",
        "file:/nonexistent/tokens",
        PLANTED_SECRET,
        ",",
    ),
    "alert_min_severity": ("warning", "INFO", "CRITICAL"),
    "metrics_port": ("0", "65536", "9808", "-1"),
    "fetch_batch_size": ("0", "50", "10001"),
    "redelivery_seconds": ("4", "5", "60", "nan"),
}


@st.composite
def environs(draw: st.DrawFn) -> dict[str, str]:
    """An environment: some RECONCILIATION_* variables (any case) with fuzzed values."""
    environ: dict[str, str] = {}
    for field in Settings.model_fields:
        if not draw(st.booleans()):
            continue
        name = env_name(field)
        if draw(st.integers(0, 9)) == 0:
            name = name.lower()
        environ[name] = draw(
            st.one_of(
                st.sampled_from(SETTING_VALUES.get(field, ("",))),
                st.sampled_from(SETTING_VALUES.get(field, ("",))),
                st.text(max_size=20),
            )
        )
    if draw(st.booleans()):
        environ[draw(st.text(max_size=30))] = draw(st.text(max_size=10))
    return environ


@FUZZ
@example(environ={"RECONCILIATION_THRESHOLD_USD": "1e999999999"})  # found: Overflow
@given(environ=environs())
def test_load_settings_is_settings_or_a_config_error(environ: dict[str, str]) -> None:
    """load_settings gives Settings (whose derived values work) or a ConfigError that repeats no
    planted secret or amount."""
    try:
        settings = load_settings(environ)
    except ConfigError as exc:
        assert_config_error(exc)
        return
    assert isinstance(settings, Settings)
    assert settings.policy.critical_usd >= settings.policy.threshold_usd
    assert PLANTED_SECRET not in repr(settings)
    settings.accounts_path  # noqa: B018  (the property must not raise)
    settings.effective_result_backend  # noqa: B018


# --------------------------------------------------------------------------- roster


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` nine times in ten, else ``bad``: a document with a dozen fields still passes
    every check often enough to reach the loader's later stages. (A coin drawn from a sampled
    tuple, not ``integers(0, n) == 0``, which hypothesis draws at its bound far more often.)"""
    return st.sampled_from((True,) * 9 + (False,)).flatmap(lambda ok: good if ok else bad)


def usually(good: tuple[Any, ...], bad: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    """One of ``good`` nine times in ten, else one of ``bad``."""
    return mostly(st.sampled_from(good), st.sampled_from(bad))


#: Secret references: the "good" ones are references load_roster accepts, whether or not
#: check_secrets can then read them.
SECRET_REFS: Final = usually(
    (
        "env:CB_KEY",
        "file:keys/cb.name",
        "file:/nonexistent/secret",
        "file:keys/empty",
        "file:keys/latin1",
        "file:keys",
        "file:\u0000",
        "file:" + "a" * 5000,
        "env:UNSET_VARIABLE",
    ),
    ("file:", "env:", "env:1BAD", PLANTED_SECRET, f"env:{PLANTED_SECRET}"),
)
BASE_URLS: Final = usually(
    ("http://127.0.0.1:9000", "https://api.coinbase.com/", "http://[::1]:9000"),
    (
        f"https://user:{PLANTED_SECRET}@api.kraken.com",
        "http://h:99999",
        "http://h/path",
        "ftp://h",
        "http://h?x=1",
        "",
        "http://[::1",
    ),
)
#: A TOML amount field: a quoted decimal (the planted amount among them) or, one time in six,
#: junk: TOML floats, huge integers, booleans, invalid decimal strings.
TOML_AMOUNTS: Final = mostly(
    st.one_of(amount_texts(), st.just(PLANTED_AMOUNT)),
    st.one_of(
        st.sampled_from(AMOUNT_JUNK_TEXT),
        st.sampled_from(
            ("987654.321", "1e400", "nan", "-1", "0", "1" + "0" * 30, "9" * 5000, "-0.0")
        ).map(Raw),
        st.floats(),
        st.booleans(),
    ),
)


@st.composite
def roster_account(draw: st.DrawFn) -> dict[str, Any]:
    """One [[accounts]] entry, shaped for its exchange."""
    exchange = draw(
        usually(("coinbase", "dydx", "kraken", "binance", "sandbox", "ccxt:okx"), ("ftx", ""))
    )
    account: dict[str, Any] = {
        "id": draw(usually(("cb-main", "dydx-0", "kraken-main", "b1"), ("-bad", "x" * 70, ""))),
        "exchange": exchange,
    }
    if draw(st.booleans()):
        account["base_url"] = draw(BASE_URLS)
    if exchange == "dydx":
        account["address"] = draw(usually(("dydx1sandboxdemodesk0000000000qz",), ("", " ")))
        account["subaccount"] = draw(usually((0, 5), (-1, 128_001, 2**70)))
    else:
        account["api_key"] = draw(SECRET_REFS)
        account["api_secret"] = draw(SECRET_REFS)
    if draw(st.booleans()):
        account["asset_map"] = {"XBT": "BTC", "ETH.F": draw(usually(("ETH",), (" ", "")))}
    if draw(st.booleans()):
        account["rate_limit"] = {
            "per_second": draw(TOML_AMOUNTS),
            "burst": draw(usually((1, 10), (0, -1, 2**70))),
        }
    return account


BOOKS: Final = st.one_of(
    st.fixed_dictionaries({"source": st.just("file"), "path": usually(("book.json",), ("",))}),
    st.fixed_dictionaries(
        {
            "source": st.just("http"),
            "url": usually(
                ("http://127.0.0.1:9000/book",),
                (f"https://user:{PLANTED_SECRET}@books.test/book", "ftp://x", "not a url"),
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "source": st.just("sql"),
            "url": usually(
                ("env:BOOK_DB", "sqlite:///book.db", "file:keys/missing", "file:\u0000"),
                (f"postgresql://u:{PLANTED_SECRET}@h/db", "file:", "env:1BAD", PLANTED_SECRET),
            ),
            "query": usually(
                ("SELECT asset, amount FROM book WHERE account_id = :account_id",),
                ("SELECT 1",),
            ),
        },
        optional={"upsert": usually(("INSERT INTO book VALUES (:account_id)",), (" ",))},
    ),
)


@st.composite
def roster_document(draw: st.DrawFn) -> dict[str, Any]:
    """An accounts file of DESIGN §2's shape."""
    document: dict[str, Any] = {}
    if draw(st.booleans()):
        policy: dict[str, Any] = {"threshold_usd": draw(TOML_AMOUNTS)}
        if draw(st.booleans()):
            policy["critical_usd"] = draw(TOML_AMOUNTS)
        if draw(st.booleans()):
            policy["tolerance"] = {"default": draw(TOML_AMOUNTS), "USD": draw(TOML_AMOUNTS)}
        document["policy"] = policy
    document["book"] = draw(BOOKS)
    if draw(st.booleans()):
        prices: dict[str, Any] = {"BTC": draw(TOML_AMOUNTS), "ETH": draw(TOML_AMOUNTS)}
        source = draw(usually(("static", "coinbase"), ("live",)))
        prices["source"] = source
        if source == "coinbase" and draw(st.booleans()):
            prices["base_url"] = draw(BASE_URLS)
        document["prices"] = prices
    empty = draw(st.sampled_from((False,) * 11 + (True,)))
    document["accounts"] = [] if empty else draw(st.lists(roster_account(), min_size=1, max_size=3))
    return document


ROSTER_ENVIRON: Final = {"CB_KEY": "organizations/o/apiKeys/k", "BOOK_DB": "sqlite:///b.db"}


@FUZZ
@example(content=b"a = " + b"[" * 100_000)  # found: RecursionError
@example(content=b"a = " + b"9" * 5_000)  # found: ValueError (int() digit limit)
@example(  # found: check_secrets let ValueError ("embedded null byte") escape
    content=b'book = {source = "file", path = "book.json"}\n'
    b'accounts = [{id = "k", exchange = "kraken", api_key = "file:\\u0000",'
    b' api_secret = "env:CB_KEY"}]\n'
)
@given(content=toml_files(roster_document()))
def test_load_roster_is_a_roster_or_a_config_error(fuzz_dir: Path, content: bytes) -> None:
    """load_roster (and the roster's secret check) gives a Roster or a ConfigError that repeats
    no planted secret or amount."""
    path = fuzz_dir / "roster.toml"
    path.write_bytes(content)
    try:
        roster = load_roster(path, SETTINGS)
    except ConfigError as exc:
        event(f"ConfigError: {_rule(exc.problems[0])}")
        assert_config_error(exc)
        return
    event("roster")
    assert isinstance(roster, Roster)
    assert roster.accounts
    assert roster.policy.critical_usd >= roster.policy.threshold_usd
    try:
        roster.check_secrets(ROSTER_ENVIRON)
    except ConfigError as exc:
        assert_clean(str(exc))


# --------------------------------------------------------------------------- book


@st.composite
def book_document(draw: st.DrawFn) -> dict[str, Any]:
    """A book of DESIGN §2's shape."""
    accounts = st.dictionaries(
        st.sampled_from(("cb-main", "dydx-0", "kraken-main", "")),
        st.dictionaries(
            st.sampled_from(("BTC", "ETH", "USDC", "ETH/USD:USDC", " ")),
            amounts(signed=True),
            max_size=3,
        ),
        max_size=3,
    )
    document: dict[str, Any] = {"accounts": draw(accounts)}
    if draw(st.booleans()):
        document["as_of"] = draw(
            st.sampled_from(
                (
                    "2024-05-01T12:00:00Z",
                    "2024-05-01T12:00:00",
                    "2024-05-01",
                    "0001-01-01T00:00:00+01:00",
                    "2024-13-01T00:00:00Z",
                    "yesterday",
                    None,
                )
            )
        )
    return document


BOOK_BODIES: Final = st.one_of(
    rendered(mutated(book_document())),
    rendered(mutated(book_document())),
    rendered(mutated(book_document())),
    dumped(JSON_VALUES),
    st.binary(max_size=200),
    st.sampled_from(EDGE_BODIES),
)


@FUZZ
@example(raw=b'{"accounts": {"a": {"BTC": "-1e999999999"}}}')  # found: decimal.Overflow
@given(raw=BOOK_BODIES)
def test_parse_book_json_is_a_book_or_a_book_error(raw: bytes) -> None:
    """parse_book_json gives a book of finite Decimal amounts, or a malformed BookError that
    repeats no planted amount."""
    try:
        document = parse_book_json(raw, "fuzz/book.json")
    except BookError as exc:
        assert_malformed_book(exc)
        return
    assert isinstance(document, BookDocument)
    assert document.as_of is None or document.as_of.tzinfo is not None
    for balances in document.as_dict().values():
        for amount in balances.values():
            assert amount.is_finite()


# --------------------------------------------------------------------------- scenario

_EC_PUBLIC = ec.generate_private_key(ec.SECP256R1()).public_key()
PUBLIC_PEM: Final = _EC_PUBLIC.public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
OTHER_PEMS: Final = tuple(
    key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for key in (
        ed25519.Ed25519PrivateKey.generate().public_key(),
        x25519.X25519PrivateKey.generate().public_key(),
        ec.generate_private_key(ec.SECP384R1()).public_key(),
    )
)
KRAKEN_SCENARIO_SECRET: Final = base64.b64encode(PLANTED_SECRET.encode()).decode()

FAULTS: Final = st.fixed_dictionaries(
    {
        "kind": usually(
            ("status_5xx", "rate_limit", "timeout", "malformed", "auth", "reset"), ("flood",)
        ),
        "times": usually((1, 2, -1, "always"), (0, True, 2**70, "never")),
    },
    optional={
        "status": usually((503,), (499, 600)),
        "retry_after_ms": usually((1000,), (-1, 3_600_001)),
        "seconds": st.one_of(
            usually((30, 0.5), (0, 3601, True)), st.floats(), st.sampled_from((2**1024, 10**400))
        ),
        "variant": usually(("json", "html", "truncated", "bad_amount"), ("xml",)),
    },
)
#: A scenario amount: a quoted decimal (the planted amount among them), or one time in six junk.
SCENARIO_AMOUNTS: Final = mostly(
    st.one_of(amount_texts(), st.just(PLANTED_AMOUNT)),
    st.one_of(st.sampled_from(AMOUNT_JUNK_TEXT), st.floats(), st.integers()),
)
#: Key and secret file names that pass the string check but name no readable key file.
BAD_PATHS: Final = ("missing.pem", "\u0000", "a" * 5000, "not-ascii.secret", "keys")


def key_files(good: str) -> st.SearchStrategy[str]:
    """``good`` (a file of :func:`fuzz_dir`) half the time, else a path that cannot be read."""
    return st.sampled_from((good,) * len(BAD_PATHS) + BAD_PATHS)


@st.composite
def scenario_account(draw: st.DrawFn) -> dict[str, Any]:
    """One [[accounts]] entry of the sandbox scenario, shaped for its venue."""
    venue = draw(usually(("coinbase", "dydx", "kraken", "binance"), ("ftx",)))
    account: dict[str, Any] = {
        "id": draw(usually(("cb-main", "dydx-0", "kraken-main", "b1"), ("-bad", ""))),
        "venue": venue,
    }
    if draw(st.booleans()):
        account["latency_ms"] = draw(usually((0, 5), (-1, 600_001)))
    if draw(st.booleans()):
        account["faults"] = draw(st.lists(FAULTS, max_size=2))
    if venue == "coinbase":
        account["key_name"] = draw(usually(("organizations/o/apiKeys/k", "k2"), ("",)))
        if draw(st.booleans()):
            pems = (PUBLIC_PEM.decode(),)
            bad_pems = (*(pem.decode() for pem in OTHER_PEMS), "-----BEGIN PUBLIC KEY-----\nno")
            account["public_key"] = draw(usually(pems, bad_pems))
        else:
            account["public_key_file"] = draw(key_files("cb.pub.pem"))
        account["balances"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "currency": usually(("BTC", "USD"), ("usd",)),
                        "available": SCENARIO_AMOUNTS,
                    },
                    optional={
                        "hold": SCENARIO_AMOUNTS,
                        "type": usually(("ACCOUNT_TYPE_VAULT", "FIAT"), ("SAVINGS",)),
                        "name": st.just("Cash"),
                    },
                ),
                max_size=2,
            )
        )
        if draw(st.booleans()):
            account["page_size"] = draw(usually((1, 250), (0, 251)))
    elif venue == "dydx":
        account["address"] = draw(usually(("dydx1demo",), ("dydx1-bad", "")))
        account["subaccount"] = draw(usually((0, 7), (128_001, -1)))
        side = usually(("LONG", "SHORT"), ("FLAT",))
        account["assets"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"symbol": st.sampled_from(("USDC", "BTC")), "side": side}
                    | {"size": SCENARIO_AMOUNTS}
                ),
                max_size=2,
            )
        )
        account["perpetuals"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"market": usually(("ETH-USD", "BTC-USD"), ("ETH-EUR",)), "side": side}
                    | {"size": SCENARIO_AMOUNTS},
                    optional={"entry_price": SCENARIO_AMOUNTS},
                ),
                max_size=2,
            )
        )
        if draw(st.booleans()):
            account["equity"] = draw(SCENARIO_AMOUNTS)
    elif venue == "kraken":
        account["api_key"] = draw(usually(("kraken-key",), ("has space",)))
        if draw(st.booleans()):
            account["api_secret"] = draw(
                usually((KRAKEN_SCENARIO_SECRET,), (PLANTED_SECRET, "", "!!!"))
            )
        else:
            account["api_secret_file"] = draw(key_files("kraken.secret"))
        account["balances"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"asset": st.sampled_from(("XXBT", "ETH.F")), "balance": SCENARIO_AMOUNTS},
                    optional={"hold_trade": SCENARIO_AMOUNTS},
                ),
                max_size=2,
            )
        )
        if draw(st.booleans()):
            account["rate_limit"] = {
                "max_counter": draw(usually((20,), (0, 2**70))),
                "decay_per_second": draw(
                    st.one_of(
                        usually((0.5, 1), (0, True)),
                        st.floats(),
                        st.sampled_from((2**1024, 10**400)),
                    )
                ),
            }
    elif venue == "binance":
        account["api_key"] = draw(usually(("binance-key",), ("has space",)))
        if draw(st.booleans()):
            account["api_secret"] = draw(usually((PLANTED_SECRET,), (" ", "has space")))
        else:
            account["api_secret_file"] = draw(key_files("binance.secret"))
        account["balances"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"asset": st.sampled_from(("BTC", "USDT")), "free": SCENARIO_AMOUNTS},
                    optional={"locked": SCENARIO_AMOUNTS},
                ),
                max_size=2,
            )
        )
        if draw(st.booleans()):
            account["uid"] = draw(usually((354937868,), (0, 2**54)))
    return account


@st.composite
def scenario_document(draw: st.DrawFn) -> dict[str, Any]:
    """A sandbox scenario of the module docstring's shape."""
    document: dict[str, Any] = {}
    if draw(st.booleans()):
        document["latency_ms"] = draw(usually((0, 25), (-1, 600_001, 2**70)))
    if draw(st.booleans()):
        document["prices"] = {
            draw(usually(("BTC", "ETH"), ("eth",))): draw(SCENARIO_AMOUNTS),
        }
    if draw(st.booleans()):
        document["rate_limits"] = {
            draw(usually(("coinbase", "dydx", "kraken", "binance"), ("ftx",))): {
                "requests": draw(usually((30,), (0, 1_000_001))),
                "window_ms": draw(usually((1000,), (0, 3_600_001))),
            }
        }
    document["accounts"] = draw(st.lists(scenario_account(), max_size=3))
    return document


def _rule(message: str) -> str:
    """The rule a message states, without the file and account it names (for statistics)."""
    return message.rsplit(": ", 1)[-1][:50]


def undup(value: Any) -> Any:
    """``value`` with every repeated-key object collapsed to a dict (as a decoder would)."""
    if isinstance(value, DupKeys):
        return {key: undup(item) for key, item in value.pairs}
    if isinstance(value, dict):
        return {key: undup(item) for key, item in value.items()}
    if isinstance(value, list):
        return [undup(item) for item in value]
    return value


def _check_scenario(load: Any) -> None:
    try:
        scenario = load()
    except ScenarioError as exc:
        event(f"ScenarioError: {_rule(str(exc))}")
        assert_clean(str(exc), secrets=(KRAKEN_SCENARIO_SECRET,))
        return
    event("scenario")
    assert isinstance(scenario, Scenario)


@FUZZ_SMALL
@example(  # found: ValueError ("embedded null byte") reading the secret file
    data={"accounts": [{"id": "k", "venue": "kraken", "api_key": "k", "api_secret_file": "\0"}]}
)
@example(  # found: ValueError ("embedded null byte") reading the public key file
    data={"accounts": [{"id": "c", "venue": "coinbase", "key_name": "k", "public_key_file": "\0"}]}
)
@example(  # found: OverflowError (float() of a huge integer)
    data={
        "accounts": [
            {
                "id": "k",
                "venue": "kraken",
                "api_key": "k",
                "api_secret_file": "kraken.secret",
                "rate_limit": {"max_counter": 20, "decay_per_second": 2**1024},
            }
        ]
    }
)
@example(  # found: OverflowError (float() of a huge integer)
    data={
        "accounts": [
            {
                "id": "k",
                "venue": "kraken",
                "api_key": "k",
                "api_secret_file": "kraken.secret",
                "faults": [{"kind": "timeout", "times": 1, "seconds": 10**400}],
            }
        ]
    }
)
@given(data=st.one_of(mutated(scenario_document()), mutated(scenario_document()), JUNK))
def test_parse_scenario_is_a_scenario_or_a_scenario_error(fuzz_dir: Path, data: Any) -> None:
    """parse_scenario gives a Scenario or a ScenarioError that repeats no planted amount or
    secret."""
    data = undup(data)
    if not isinstance(data, dict):
        return
    _check_scenario(lambda: parse_scenario(data, source="fuzz-scenario", base_dir=fuzz_dir))


@FUZZ_SMALL
@example(content=b"a = '\xff\xfe'\n")  # found: UnicodeDecodeError
@example(content=b"a = " + b"{b = " * 2_000)  # found: RecursionError
@example(content=b"a = " + b"9" * 5_000)  # found: ValueError (int() digit limit)
@given(content=toml_files(scenario_document()))
def test_load_scenario_is_a_scenario_or_a_scenario_error(fuzz_dir: Path, content: bytes) -> None:
    """load_scenario of any file gives a Scenario or a ScenarioError."""
    path = fuzz_dir / "scenario.toml"
    path.write_bytes(content)
    _check_scenario(lambda: load_scenario(path))
