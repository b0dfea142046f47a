"""Venue outcomes as JSON, for the chord: header results cross the broker as strings.

``{"balances": {asset: "decimal"}}`` or ``{"error": {"kind": …, "message": …}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.cycle import VenueOutcome
from domain.report import FetchError
from domain.serialization import (
    SerializationError,
    balances_from_json,
    balances_to_json,
    error_from_json,
    error_to_json,
)

OutcomeJson = dict[str, Any]


def outcome_to_json(outcome: VenueOutcome) -> OutcomeJson:
    """One account's venue outcome as JSON-safe data (amounts as strings)."""
    if isinstance(outcome, FetchError):
        return {"error": error_to_json(outcome)}
    return {"balances": balances_to_json(outcome)}


def outcome_from_json(data: object) -> VenueOutcome:
    """Inverse of :func:`outcome_to_json`; SerializationError for anything else."""
    if not isinstance(data, Mapping):
        raise SerializationError("venue outcome must be an object")
    if set(data) == {"balances"}:
        return balances_from_json(data["balances"])
    if set(data) == {"error"}:
        error = error_from_json(data["error"])
        if error is None:
            raise SerializationError("venue outcome error must not be null")
        return error
    raise SerializationError("venue outcome must hold exactly one of balances, error")


def outcomes_from_json(data: object) -> dict[str, VenueOutcome]:
    """``{account_id: outcome}`` from JSON."""
    if not isinstance(data, Mapping):
        raise SerializationError("venue outcomes must be an object")
    return {str(account): outcome_from_json(value) for account, value in data.items()}
