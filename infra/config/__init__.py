"""Configuration: the ``RECONCILIATION_*`` settings, the TOML accounts file, secret references.

Every problem is a :class:`ConfigError` naming the variable, file, account and field; a
configuration error refuses the whole run (DESIGN §2).
"""

from infra.config.errors import ConfigError
from infra.config.roster import (
    AccountConfig,
    BookConfig,
    FileBookConfig,
    HttpBookConfig,
    PricesConfig,
    RateLimit,
    Roster,
    SqlBookConfig,
    load_roster,
)
from infra.config.secrets import SecretRef, parse_secret_ref, resolve
from infra.config.settings import Settings, builtin_roster_path, load_settings

__all__ = [
    "AccountConfig",
    "BookConfig",
    "ConfigError",
    "FileBookConfig",
    "HttpBookConfig",
    "PricesConfig",
    "RateLimit",
    "Roster",
    "SecretRef",
    "Settings",
    "SqlBookConfig",
    "builtin_roster_path",
    "load_roster",
    "load_settings",
    "parse_secret_ref",
    "resolve",
]
