"""Typed reads from a decoded venue JSON body, raising :class:`MalformedVenueResponse`.

Each helper takes the venue name and a field path (``accounts[3].hold.value``) so that the
error names where the body departs from the documented shape. Messages never repeat the value
found there: it may be a balance.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from domain.amounts import InvalidAmount, parse_amount
from infra.venues.errors import MalformedVenueResponse


def _malformed(venue: str, field: str, problem: str) -> MalformedVenueResponse:
    return MalformedVenueResponse(f"{venue}: malformed response: {field} {problem}")


def require_object(value: Any, *, venue: str, field: str) -> Mapping[str, Any]:
    """``value`` as a JSON object."""
    if not isinstance(value, dict):
        raise _malformed(venue, field, f"is {_json_type(value)}, expected an object")
    return value


def require_list(value: Any, *, venue: str, field: str) -> list[Any]:
    """``value`` as a JSON array."""
    if not isinstance(value, list):
        raise _malformed(venue, field, f"is {_json_type(value)}, expected an array")
    return value


def require_str(value: Any, *, venue: str, field: str, non_empty: bool = True) -> str:
    """``value`` as a JSON string (non-empty unless told otherwise)."""
    if not isinstance(value, str):
        raise _malformed(venue, field, f"is {_json_type(value)}, expected a string")
    if non_empty and not value.strip():
        raise _malformed(venue, field, "is empty")
    return value


def require_bool(value: Any, *, venue: str, field: str) -> bool:
    """``value`` as a JSON boolean."""
    if not isinstance(value, bool):
        raise _malformed(venue, field, f"is {_json_type(value)}, expected a boolean")
    return value


def require_member(
    obj: Mapping[str, Any], key: str, *, venue: str, field: str | None = None
) -> Any:
    """``obj[key]``; a missing key is malformed (``field`` names it, default ``key``)."""
    if key not in obj:
        raise _malformed(venue, field or key, "is missing")
    return obj[key]


def require_amount(value: Any, *, venue: str, field: str, unsigned: bool) -> Decimal:
    """``value`` (a decimal string or an exactly parsed JSON number) as an amount.

    Not a finite, bounded decimal, or negative where the venue's field is ``unsigned``, is
    malformed.
    """
    if isinstance(value, (bool, float)) or not isinstance(value, (str, Decimal)):
        raise _malformed(venue, field, f"is {_json_type(value)}, expected a decimal amount")
    try:
        return parse_amount(value, allow_negative=not unsigned)
    except InvalidAmount as exc:
        # InvalidAmount's own message never repeats the value either.
        raise _malformed(venue, field, f"is not a valid amount ({exc})") from exc


def _json_type(value: Any) -> str:
    """The JSON type name of a decoded value, for messages (never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (Decimal, int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
