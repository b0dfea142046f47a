"""The scalar settings: the ``RECONCILIATION_*`` environment variables of DESIGN §2.

:func:`load_settings` reads them (from ``os.environ`` or a mapping the caller passes) and
turns every bad value into one :class:`ConfigError` whose lines each name the variable and the
rule it breaks, never the value (it may be a secret). Nothing is read at import time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from domain.amounts import InvalidAmount, multiply, parse_amount
from domain.policy import CRITICAL_MULTIPLE, DEFAULT_THRESHOLD_USD, Policy
from infra.config.errors import ConfigError
from infra.config.secrets import SecretRef, resolve

ENV_PREFIX: Final = "RECONCILIATION_"

#: What each variable must be: the text of its error line (the value is never shown).
_RULES: Final[Mapping[str, str]] = {
    "enabled": "must be true or false",
    "interval_seconds": "must be a number of seconds greater than 0",
    "threshold_usd": 'must be a decimal USD amount, 0 or more (e.g. "100")',
    "critical_usd": 'must be a decimal USD amount, 0 or more (e.g. "10000")',
    "retry_count": "must be an integer between 0 and 10",
    "timeout_seconds": "must be a number of seconds greater than 0",
    "database_url": "must be a database URL such as sqlite:///recon.db",
    "broker_url": "must be a broker URL such as redis://host:6379/0",
    "result_backend": "must be a result backend URL such as redis://host:6379/1",
    "accounts_file": "must be the path of the TOML accounts file",
    "webhook_url": "must be an http:// or https:// URL with a host",
    "log_level": "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
    "webhook_secret": "must not be empty",
    "confirm_delay_seconds": "must be a number of seconds, 0 or more",
    "operator_tokens": "must be name=token pairs separated by commas, or file:/path",
    "alert_min_severity": "must be one of WARNING, ERROR, CRITICAL",
    "metrics_port": "must be a TCP port from 1 to 65535, or 0 for no metrics endpoint",
    "fetch_batch_size": "must be an integer from 1 to 10000",
    "redelivery_seconds": "must be a number of seconds, 5 or more",
}
_URL_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def env_name(field: str) -> str:
    """The environment variable of the settings field ``field``."""
    return ENV_PREFIX + field.upper()


def builtin_roster_path() -> Path:
    """The built-in sandbox roster, used when ``RECONCILIATION_ACCOUNTS_FILE`` is unset."""
    return Path(__file__).resolve().parent.parent / "sandbox" / "data" / "roster.toml"


def _money(value: object) -> Decimal:
    try:
        return parse_amount(value, allow_negative=False)
    except InvalidAmount as exc:
        raise ValueError(str(exc)) from None


def _url(value: object) -> object:
    if isinstance(value, str) and not _URL_SCHEME.match(value):
        raise ValueError("not a URL")
    return value


def _http_url(value: object) -> object:
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL")
    return value


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


def _not_blank(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise ValueError("empty")
    return value


Money = Annotated[Decimal, BeforeValidator(_money)]
Seconds = Annotated[float, Field(allow_inf_nan=False)]
Url = Annotated[str, BeforeValidator(_url)]
HttpUrl = Annotated[str, BeforeValidator(_http_url)]
NonEmptySecret = Annotated[SecretStr, BeforeValidator(_not_blank)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
AlertSeverity = Literal["WARNING", "ERROR", "CRITICAL"]


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            name if self.case_sensitive else name.lower(): value
            for name, value in self._environ.items()
            if not (self.env_ignore_empty and value == "")
        }


class Settings(BaseSettings):
    """Every ``RECONCILIATION_*`` variable, validated; build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore", frozen=True
    )

    enabled: bool = True
    interval_seconds: Seconds = Field(default=60, gt=0)
    threshold_usd: Money = DEFAULT_THRESHOLD_USD
    #: None: 100 × the effective threshold (see :attr:`effective_critical_usd`).
    critical_usd: Money | None = None
    retry_count: int = Field(default=3, ge=0, le=10)
    timeout_seconds: Seconds = Field(default=10, gt=0)
    # URLs may carry a password (database, Redis) or be one (a Slack webhook): kept out of repr.
    database_url: Url = Field(default="sqlite:///recon.db", repr=False)
    #: None: the embedded broker (no server needed).
    broker_url: Url | None = Field(default=None, repr=False)
    #: None: follows the broker.
    result_backend: Url | None = Field(default=None, repr=False)
    #: None: the built-in sandbox roster (see :attr:`accounts_path`).
    accounts_file: Path | None = None
    webhook_url: HttpUrl | None = Field(default=None, repr=False)
    log_level: Annotated[LogLevel, BeforeValidator(_upper)] = "INFO"
    webhook_secret: NonEmptySecret | None = None
    confirm_delay_seconds: Seconds = Field(default=5, ge=0)
    operator_tokens: NonEmptySecret | None = None
    alert_min_severity: Annotated[AlertSeverity, BeforeValidator(_upper)] = "WARNING"
    #: Where each worker process serves its Prometheus metrics (0: none). Beyond DESIGN §2.
    metrics_port: int = Field(default=9808, ge=0, le=65535)
    #: Most accounts one chord header task fetches (concurrently); an endpoint with more
    #: accounts is split over several tasks. Beyond DESIGN §2; see the README's figures.
    fetch_batch_size: int = Field(default=50, ge=1, le=10_000)
    #: Redis visibility timeout: a task a lost worker held returns to the queue after this.
    #: Beyond DESIGN §2. Every task finishes one attempt well within it (timeouts included).
    redelivery_seconds: Seconds = Field(default=60, ge=5)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment only: no ``.env`` file, no secrets directory."""
        del dotenv_settings, file_secret_settings
        return (init_settings, env_settings)

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.critical_usd is not None and self.critical_usd < self.threshold_usd:
            raise PydanticCustomError(
                "critical_below_threshold",
                f"{env_name('critical_usd')}: must be at least {env_name('threshold_usd')}",
            )
        return self

    @field_validator("operator_tokens")
    @classmethod
    def _check_token_pairs(cls, value: SecretStr | None) -> SecretStr | None:
        """Inline pairs are checked now; a ``file:`` is read by :meth:`operator_token_table`."""
        if value is None or value.get_secret_value().strip().startswith("file:"):
            return value
        try:
            _parse_token_pairs(value.get_secret_value().split(","))
        except ValueError as exc:
            raise PydanticCustomError("operator_tokens", str(exc)) from None
        return value

    @property
    def effective_critical_usd(self) -> Decimal:
        """``RECONCILIATION_CRITICAL_USD``, or 100 × the threshold when it is unset."""
        if self.critical_usd is not None:
            return self.critical_usd
        return multiply(self.threshold_usd, CRITICAL_MULTIPLE)

    @property
    def policy(self) -> Policy:
        """The policy of the environment alone (the accounts file's ``[policy]`` overrides it)."""
        return Policy(threshold_usd=self.threshold_usd, critical_usd=self.effective_critical_usd)

    @property
    def accounts_path(self) -> Path:
        """The accounts file to load: the configured one, or the built-in sandbox roster."""
        return self.accounts_file if self.accounts_file is not None else builtin_roster_path()

    @property
    def effective_result_backend(self) -> str | None:
        """The result backend, following the broker when unset (None: embedded)."""
        return self.result_backend if self.result_backend is not None else self.broker_url

    def operator_token_table(self, *, base_dir: Path | None = None) -> Mapping[str, SecretStr]:
        """Operator name → token, from the inline pairs or the ``file:`` the variable names.

        The file is read at each call (a rotated file is picked up); a relative path is
        relative to ``base_dir`` (default: the working directory). Unset → no operator.
        """
        if self.operator_tokens is None:
            return {}
        text = self.operator_tokens.get_secret_value().strip()
        if not text.startswith("file:"):
            return _parse_token_pairs(text.split(","))
        ref = SecretRef("file", text.removeprefix("file:"))
        try:
            content = resolve(ref, environ={}, base_dir=base_dir or Path.cwd())
        except ConfigError as exc:
            raise ConfigError(f"{env_name('operator_tokens')}: {exc}") from None
        lines = [line for line in content.splitlines() if line.strip()]
        try:
            return _parse_token_pairs(lines)
        except ValueError as exc:
            raise ConfigError(f"{exc} (in {ref})") from None


def _parse_token_pairs(entries: list[str]) -> dict[str, SecretStr]:
    """``name=token`` entries → a table; errors name the entry's position, never its token."""
    variable = env_name("operator_tokens")
    table: dict[str, SecretStr] = {}
    for position, entry in enumerate(entries, start=1):
        name, equals, token = entry.strip().partition("=")
        name, token = name.strip(), token.strip()
        if not (equals and name and token):
            raise ValueError(f"{variable}: entry {position} is not name=token")
        if name in table:
            raise ValueError(f"{variable}: operator {name!r} is listed twice")
        table[name] = SecretStr(token)
    return table


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from ``environ`` (default: ``os.environ``); a bad value → ConfigError."""
    try:
        if environ is None:
            return Settings()
        # pydantic-settings' documented hook for pre-built sources: the mapping is the whole
        # environment, so nothing from os.environ leaks into a caller's (or a test's) settings.
        return Settings(_build_sources=((_EnvironSource(Settings, environ),), {}))
    except ValidationError as exc:
        raise ConfigError(_problems(exc.errors(include_url=False, include_input=False))) from None


def _problems(errors: list[Any]) -> list[str]:
    """One line per problem, naming the variable (never its value), in pydantic's order."""
    problems: list[str] = []
    for error in errors:
        loc = error["loc"]
        field = loc[0] if loc else None
        if str(error["msg"]).startswith(ENV_PREFIX):  # our own message, already precise
            line = str(error["msg"])
        elif isinstance(field, str) and field in _RULES:
            line = f"{env_name(field)}: {_RULES[field]}"
        else:
            line = str(error["msg"])
        if line not in problems:
            problems.append(line)
    return problems
