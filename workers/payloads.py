"""Validation of the keyword arguments other services send (DESIGN §6): each problem is an
:class:`InvalidTaskPayload` naming the argument, so a bad payload ends as one clear task
failure — never a retry loop."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any


class InvalidTaskPayload(ValueError):
    """A task was sent arguments it cannot take; the message names the argument."""


def check_arguments(
    task: str,
    kwargs: Mapping[str, Any],
    *,
    required: Collection[str] = (),
    optional: Collection[str] = (),
    positional: Sequence[Any] = (),
) -> None:
    """Refuse positional arguments (their values are not repeated: one may be a secret) and
    unknown or missing keyword arguments."""
    allowed = set(required) | set(optional)
    takes = ", ".join(sorted(allowed)) or "no arguments"
    if positional:
        raise InvalidTaskPayload(
            f"{task}: {len(positional)} positional argument(s) given; pass keyword arguments "
            f"only (it takes: {takes})"
        )
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise InvalidTaskPayload(
            f"{task}: unknown argument {', '.join(map(repr, unknown))} (it takes: {takes})"
        )
    missing = sorted(name for name in required if name not in kwargs)
    if missing:
        raise InvalidTaskPayload(f"{task}: missing argument {', '.join(map(repr, missing))}")


def require_text(task: str, name: str, value: object) -> str:
    """A non-empty string argument."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidTaskPayload(
            f"{task}: argument {name!r} must be a non-empty string, not {type(value).__name__}"
        )
    return value


def require_choice(task: str, name: str, value: object, choices: Collection[str]) -> str:
    """A string argument naming one of ``choices``."""
    text = require_text(task, name, value)
    if text not in choices:
        raise InvalidTaskPayload(f"{task}: argument {name!r}: unknown {name} {text!r}")
    return text


def require_limit(task: str, name: str, value: object, *, maximum: int = 10_000) -> int:
    """A positive integer argument up to ``maximum`` (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidTaskPayload(
            f"{task}: argument {name!r} must be an integer from 1 to {maximum}"
        )
    return value
