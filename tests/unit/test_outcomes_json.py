"""Venue outcomes cross the broker as JSON with amounts as strings, and come back exact."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from app.outcomes import outcome_from_json, outcome_to_json, outcomes_from_json
from domain.report import ErrorKind, FetchError
from domain.serialization import SerializationError


def test_balances_round_trip_exactly_as_strings() -> None:
    """Balances become decimal strings and parse back to the same Decimals."""
    balances = {"BTC": Decimal("0.1000000000000000001"), "ETH/USD:USDC": Decimal("-1.5")}
    data = json.loads(json.dumps(outcome_to_json(balances)))
    assert data == {"balances": {"BTC": "0.1000000000000000001", "ETH/USD:USDC": "-1.5"}}
    assert outcome_from_json(data) == balances


def test_errors_round_trip() -> None:
    """A failed fetch stays a failure with its kind: never an empty balance."""
    error = FetchError(ErrorKind.AUTH, "coinbase: HTTP 401")
    assert outcome_from_json(outcome_to_json(error)) == error


@pytest.mark.parametrize(
    "bad",
    [None, [], {}, {"balances": {"BTC": 1.5}}, {"balances": {}, "error": None}, {"error": None}],
)
def test_anything_else_is_refused(bad: object) -> None:
    """Floats, both keys, neither key, or a null error are not outcomes."""
    with pytest.raises(SerializationError):
        outcome_from_json(bad)


def test_outcomes_map_is_keyed_by_account() -> None:
    """The header's result maps account ids to outcomes."""
    parsed = outcomes_from_json(
        {"a": {"balances": {"USD": "1"}}, "b": {"error": {"kind": "timeout", "message": "m"}}}
    )
    assert parsed["a"] == {"USD": Decimal(1)}
    assert isinstance(parsed["b"], FetchError)
