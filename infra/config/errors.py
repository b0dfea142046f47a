"""The one exception of configuration loading: every problem found, each naming where it is.

A configuration error refuses the whole run (DESIGN §2). Messages name the variable, the
file, the account and the field; they never repeat a secret or an amount.
"""

from __future__ import annotations

from collections.abc import Iterable

from domain.report import ErrorKind


class ConfigError(Exception):
    """The settings, the roster or a secret reference is not usable.

    ``problems`` lists every problem found (at least one), one self-contained line each;
    ``str(error)`` is those lines joined by newlines.
    """

    kind = ErrorKind.CONFIG

    def __init__(self, problems: str | Iterable[str]) -> None:
        lines = (problems,) if isinstance(problems, str) else tuple(problems)
        if not lines:
            raise ValueError("a ConfigError names at least one problem")
        super().__init__("\n".join(lines))
        self.problems: tuple[str, ...] = lines
