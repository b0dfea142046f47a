"""Secret references: ``env:NAME`` or ``file:/path``, never the secret itself (DESIGN §2).

The accounts file names where a secret is, not what it is. A :class:`SecretRef` prints as its
reference only; :func:`resolve` reads the value when a client is built, and its errors name
the reference, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from infra.config.errors import ConfigError

#: The refusal of a secret written into the file (a message, not a credential).
LITERAL_SECRET_REFUSED: Final = "a literal secret is not allowed; use env:NAME or file:/path"  # noqa: S105
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret is: an environment variable (``env``) or a file (``file``)."""

    scheme: Literal["env", "file"]
    target: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.target}"

    def __repr__(self) -> str:
        return f"SecretRef({str(self)!r})"


def parse_secret_ref(text: str) -> SecretRef:
    """The reference written as ``env:NAME`` or ``file:/path``; anything else is refused.

    The error never repeats ``text``: when it is not a reference, it is likely the secret.
    """
    scheme, colon, target = text.strip().partition(":")
    if colon and scheme == "env":
        if not _ENV_NAME.match(target):
            raise ConfigError("env: needs an environment variable name (letters, digits, _)")
        return SecretRef("env", target)
    if colon and scheme == "file":
        if not target.strip():
            raise ConfigError("file: needs a path")
        return SecretRef("file", target)
    raise ConfigError(LITERAL_SECRET_REFUSED)


def resolve(ref: SecretRef, *, environ: Mapping[str, str], base_dir: Path) -> str:
    """The secret ``ref`` points at.

    ``env:NAME`` reads ``environ``; ``file:path`` reads the file (a relative path is relative
    to ``base_dir``, the accounts file's folder) and drops one trailing newline. A missing
    variable, an unreadable file or an empty secret raises :class:`ConfigError` naming ``ref``.
    """
    if ref.scheme == "env":
        if ref.target not in environ:
            raise ConfigError(f"{ref}: the environment variable is not set")
        value = environ[ref.target]
    else:
        path = Path(ref.target)
        if not path.is_absolute():
            path = base_dir / path
        try:
            value = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{ref}: the file is not UTF-8 text") from None
        except ValueError:  # "embedded null byte": no file can have that path
            raise ConfigError(f"{ref}: cannot read the file (a NUL in the path)") from None
        except OSError as exc:
            raise ConfigError(f"{ref}: cannot read the file ({exc.strerror})") from None
        value = _drop_one_newline(value)
    if not value:
        raise ConfigError(f"{ref}: the secret is empty")
    return value


def _drop_one_newline(text: str) -> str:
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text
