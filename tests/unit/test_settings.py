"""The RECONCILIATION_* settings: defaults, exact parsing, and errors that name the variable."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from infra.config import ConfigError, Settings, builtin_roster_path, load_settings
from infra.config.settings import env_name

SECRET = "hunter2-very-secret-value"


def _error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    return caught.value


def test_defaults_allow_immediate_use() -> None:
    """With no variable set, every setting takes the DESIGN §2 default."""
    settings = load_settings({})
    assert settings.enabled is True
    assert settings.interval_seconds == 60
    assert settings.threshold_usd == Decimal(100)
    assert settings.critical_usd is None
    assert settings.effective_critical_usd == Decimal(10000)
    assert settings.retry_count == 3
    assert settings.timeout_seconds == 10
    assert settings.database_url == "sqlite:///recon.db"
    assert settings.broker_url is None
    assert settings.result_backend is None
    assert settings.effective_result_backend is None
    assert settings.accounts_file is None
    assert settings.accounts_path == builtin_roster_path()
    assert settings.webhook_url is None
    assert settings.log_level == "INFO"
    assert settings.webhook_secret is None
    assert settings.confirm_delay_seconds == 5
    assert settings.operator_tokens is None
    assert settings.operator_token_table() == {}
    assert settings.alert_min_severity == "WARNING"


def test_builtin_roster_is_the_sandbox_data_file() -> None:
    """The default roster is infra/sandbox/data/roster.toml inside the installed package."""
    path = builtin_roster_path()
    assert path.is_absolute()
    assert path.parts[-4:] == ("infra", "sandbox", "data", "roster.toml")


def test_every_variable_is_read_from_the_given_mapping() -> None:
    """Each variable of the §2 table is read, by its RECONCILIATION_ name, from the mapping."""
    settings = load_settings(
        {
            "RECONCILIATION_ENABLED": "false",
            "RECONCILIATION_INTERVAL_SECONDS": "2.5",
            "RECONCILIATION_THRESHOLD_USD": "250.10",
            "RECONCILIATION_CRITICAL_USD": "5000",
            "RECONCILIATION_RETRY_COUNT": "0",
            "RECONCILIATION_TIMEOUT_SECONDS": "0.5",
            "RECONCILIATION_DATABASE_URL": "postgresql+psycopg://recon@db/recon",
            "RECONCILIATION_BROKER_URL": "redis://redis:6379/0",
            "RECONCILIATION_RESULT_BACKEND": "redis://redis:6379/1",
            "RECONCILIATION_ACCOUNTS_FILE": "/etc/recon/accounts.toml",
            "RECONCILIATION_WEBHOOK_URL": "https://hooks.example.com/recon",
            "RECONCILIATION_LOG_LEVEL": "debug",
            "RECONCILIATION_WEBHOOK_SECRET": SECRET,
            "RECONCILIATION_CONFIRM_DELAY_SECONDS": "0",
            "RECONCILIATION_OPERATOR_TOKENS": "alice=tok-a,bob=tok-b",
            "RECONCILIATION_ALERT_MIN_SEVERITY": "critical",
        }
    )
    assert settings.enabled is False
    assert settings.interval_seconds == 2.5
    assert settings.threshold_usd == Decimal("250.10")
    assert str(settings.threshold_usd) == "250.10"
    assert settings.effective_critical_usd == Decimal(5000)
    assert settings.retry_count == 0
    assert settings.timeout_seconds == 0.5
    assert settings.database_url == "postgresql+psycopg://recon@db/recon"
    assert settings.broker_url == "redis://redis:6379/0"
    assert settings.effective_result_backend == "redis://redis:6379/1"
    assert settings.accounts_path == Path("/etc/recon/accounts.toml")
    assert settings.webhook_url == "https://hooks.example.com/recon"
    assert settings.log_level == "DEBUG"
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == SECRET
    assert settings.confirm_delay_seconds == 0
    table = settings.operator_token_table()
    assert {name: token.get_secret_value() for name, token in table.items()} == {
        "alice": "tok-a",
        "bob": "tok-b",
    }
    assert settings.alert_min_severity == "CRITICAL"


def test_given_mapping_ignores_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mapping passed to load_settings is the whole environment: os.environ does not leak in."""
    monkeypatch.setenv("RECONCILIATION_RETRY_COUNT", "99")
    monkeypatch.setenv("RECONCILIATION_THRESHOLD_USD", "7")
    settings = load_settings({})
    assert settings.retry_count == 3
    assert settings.threshold_usd == Decimal(100)


def test_without_mapping_the_process_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_settings() with no argument reads os.environ at call time."""
    monkeypatch.setenv("RECONCILIATION_RETRY_COUNT", "7")
    assert load_settings().retry_count == 7


def test_result_backend_follows_the_broker() -> None:
    """An unset result backend follows the broker URL."""
    settings = load_settings({"RECONCILIATION_BROKER_URL": "redis://r:6379/0"})
    assert settings.result_backend is None
    assert settings.effective_result_backend == "redis://r:6379/0"


def test_an_empty_variable_counts_as_unset() -> None:
    """VAR= (as compose files often write) leaves the default in place."""
    settings = load_settings({"RECONCILIATION_RETRY_COUNT": "", "RECONCILIATION_WEBHOOK_URL": ""})
    assert settings.retry_count == 3
    assert settings.webhook_url is None


@pytest.mark.parametrize(
    ("threshold", "critical"),
    [("100", "10000"), ("0.5", "50"), ("123.456789", "12345.6789"), ("0", "0")],
)
def test_critical_defaults_to_100_times_the_threshold(threshold: str, critical: str) -> None:
    """Unset RECONCILIATION_CRITICAL_USD is exactly 100 × the threshold, also in the policy."""
    settings = load_settings({"RECONCILIATION_THRESHOLD_USD": threshold})
    assert settings.effective_critical_usd == Decimal(critical)
    assert settings.policy.critical_usd == Decimal(critical)
    assert settings.policy.threshold_usd == Decimal(threshold)


def test_policy_of_the_environment_uses_the_default_tolerance() -> None:
    """The environment's policy carries the thresholds and the 0.00000001 default tolerance."""
    policy = load_settings({"RECONCILIATION_CRITICAL_USD": "2000"}).policy
    assert policy.critical_usd == Decimal(2000)
    assert policy.tolerance("BTC") == Decimal("0.00000001")


def test_money_is_parsed_exactly_from_its_string() -> None:
    """A threshold with many digits keeps every digit (never through float)."""
    settings = load_settings({"RECONCILIATION_THRESHOLD_USD": "0.1000000000000000055511"})
    assert settings.threshold_usd == Decimal("0.1000000000000000055511")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ENABLED", "maybe"),
        ("INTERVAL_SECONDS", "0"),
        ("INTERVAL_SECONDS", "-5"),
        ("INTERVAL_SECONDS", "nan"),
        ("INTERVAL_SECONDS", "inf"),
        ("INTERVAL_SECONDS", "soon"),
        ("THRESHOLD_USD", "NaN"),
        ("THRESHOLD_USD", "Infinity"),
        ("THRESHOLD_USD", "-1"),
        ("THRESHOLD_USD", "1e400"),
        ("THRESHOLD_USD", "100 USD"),
        ("CRITICAL_USD", "-Infinity"),
        ("CRITICAL_USD", "lots"),
        ("RETRY_COUNT", "11"),
        ("RETRY_COUNT", "-1"),
        ("RETRY_COUNT", "three"),
        ("RETRY_COUNT", "2.5"),
        ("TIMEOUT_SECONDS", "0"),
        ("TIMEOUT_SECONDS", "-1"),
        ("DATABASE_URL", "recon.db"),
        ("BROKER_URL", "localhost:6379"),
        ("RESULT_BACKEND", "nowhere"),
        ("WEBHOOK_URL", "ftp://hooks.example.com/x"),
        ("WEBHOOK_URL", "https://"),
        ("WEBHOOK_URL", "hooks.example.com"),
        ("LOG_LEVEL", "verbose"),
        ("WEBHOOK_SECRET", "   "),
        ("CONFIRM_DELAY_SECONDS", "-1"),
        ("OPERATOR_TOKENS", "alice"),
        ("OPERATOR_TOKENS", "alice=,bob=x"),
        ("ALERT_MIN_SEVERITY", "INFO"),
    ],
)
def test_a_bad_value_names_the_variable(variable: str, value: str) -> None:
    """Every bad value is one ConfigError line that starts with the variable's name."""
    name = f"RECONCILIATION_{variable}"
    error = _error({name: value})
    assert len(error.problems) == 1
    assert error.problems[0].startswith(f"{name}: ")


def test_retry_count_message_states_the_rule() -> None:
    """The message says what the variable must be."""
    error = _error({"RECONCILIATION_RETRY_COUNT": "11"})
    assert str(error) == "RECONCILIATION_RETRY_COUNT: must be an integer between 0 and 10"


def test_every_bad_variable_is_listed_at_once() -> None:
    """Several bad values give one error listing each variable once."""
    error = _error(
        {
            "RECONCILIATION_RETRY_COUNT": "x",
            "RECONCILIATION_THRESHOLD_USD": "NaN",
            "RECONCILIATION_LOG_LEVEL": "loud",
        }
    )
    assert sorted(error.problems) == sorted(
        [
            "RECONCILIATION_RETRY_COUNT: must be an integer between 0 and 10",
            f'{env_name("threshold_usd")}: must be a decimal USD amount, 0 or more (e.g. "100")',
            "RECONCILIATION_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        ]
    )


def test_critical_below_threshold_is_refused() -> None:
    """A critical level under the threshold is refused, naming RECONCILIATION_CRITICAL_USD."""
    error = _error({"RECONCILIATION_THRESHOLD_USD": "500", "RECONCILIATION_CRITICAL_USD": "499"})
    assert str(error) == (
        "RECONCILIATION_CRITICAL_USD: must be at least RECONCILIATION_THRESHOLD_USD"
    )


def test_errors_never_echo_a_secret() -> None:
    """Neither the webhook secret nor an operator token appears in an error message."""
    error = _error(
        {
            "RECONCILIATION_WEBHOOK_SECRET": SECRET,
            "RECONCILIATION_OPERATOR_TOKENS": f"alice={SECRET},{SECRET}",
            "RECONCILIATION_WEBHOOK_URL": f"ftp://{SECRET}",
            "RECONCILIATION_RETRY_COUNT": SECRET,
        }
    )
    assert SECRET not in str(error)
    assert "RECONCILIATION_OPERATOR_TOKENS: entry 2 is not name=token" in error.problems


def test_settings_never_print_secrets_or_urls() -> None:
    """repr/str of the settings hide secrets and URLs that may carry a password."""
    settings = load_settings(
        {
            "RECONCILIATION_WEBHOOK_SECRET": SECRET,
            "RECONCILIATION_OPERATOR_TOKENS": f"alice={SECRET}",
            "RECONCILIATION_DATABASE_URL": f"postgresql+psycopg://recon:{SECRET}@db/recon",
            "RECONCILIATION_BROKER_URL": f"redis://:{SECRET}@redis:6379/0",
            "RECONCILIATION_WEBHOOK_URL": f"https://hooks.slack.com/services/{SECRET}",
        }
    )
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


def test_operator_tokens_from_a_file(tmp_path: Path) -> None:
    """file:/path holds one name=token pair a line; blank lines are skipped; read per call."""
    tokens = tmp_path / "operators"
    tokens.write_text("alice=tok-a\n\nbob = tok-b\n", encoding="utf-8")
    settings = load_settings({"RECONCILIATION_OPERATOR_TOKENS": f"file:{tokens}"})
    table = settings.operator_token_table()
    assert {name: token.get_secret_value() for name, token in table.items()} == {
        "alice": "tok-a",
        "bob": "tok-b",
    }
    tokens.write_text("carol=tok-c\n", encoding="utf-8")
    assert list(settings.operator_token_table()) == ["carol"]


def test_operator_tokens_relative_file_uses_base_dir(tmp_path: Path) -> None:
    """A relative file: path is resolved against the base_dir given."""
    (tmp_path / "ops").write_text("alice=tok-a\n", encoding="utf-8")
    settings = load_settings({"RECONCILIATION_OPERATOR_TOKENS": "file:ops"})
    assert list(settings.operator_token_table(base_dir=tmp_path)) == ["alice"]


def test_operator_tokens_file_errors_name_the_variable(tmp_path: Path) -> None:
    """A missing or malformed token file raises ConfigError naming the variable, not a token."""
    missing = load_settings({"RECONCILIATION_OPERATOR_TOKENS": f"file:{tmp_path / 'none'}"})
    with pytest.raises(ConfigError, match=r"^RECONCILIATION_OPERATOR_TOKENS: file:"):
        missing.operator_token_table()
    bad = tmp_path / "bad"
    bad.write_text(f"alice=a\n{SECRET}\n", encoding="utf-8")
    broken = load_settings({"RECONCILIATION_OPERATOR_TOKENS": f"file:{bad}"})
    with pytest.raises(ConfigError) as caught:
        broken.operator_token_table()
    assert str(caught.value).startswith("RECONCILIATION_OPERATOR_TOKENS: entry 2")
    assert SECRET not in str(caught.value)


def test_duplicate_operator_is_refused() -> None:
    """One operator name bound twice is ambiguous and refused, naming the operator."""
    error = _error({"RECONCILIATION_OPERATOR_TOKENS": "alice=a,alice=b"})
    assert str(error) == "RECONCILIATION_OPERATOR_TOKENS: operator 'alice' is listed twice"


def test_settings_are_immutable() -> None:
    """Settings are frozen once loaded."""
    settings = load_settings({})
    with pytest.raises(ValueError, match="frozen"):
        settings.retry_count = 5  # type: ignore[misc]
    assert isinstance(settings, Settings)
