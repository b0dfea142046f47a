"""Validation of task arguments sent by other services: each problem names the argument."""

from __future__ import annotations

import pytest

from workers.payloads import (
    InvalidTaskPayload,
    check_arguments,
    require_choice,
    require_limit,
    require_text,
)


def test_unknown_argument_is_named_with_what_the_task_takes() -> None:
    """An extra keyword argument is refused, naming it and the accepted ones."""
    with pytest.raises(InvalidTaskPayload, match=r"unknown argument 'acount_id'.*account_id"):
        check_arguments("recon.reconcile_account", {"acount_id": "x"}, required=("account_id",))


def test_missing_argument_is_named() -> None:
    """A required argument that is absent is named."""
    with pytest.raises(InvalidTaskPayload, match="missing argument 'exchange'"):
        check_arguments("recon.reconcile_exchange", {}, required=("exchange",))


def test_task_without_arguments_refuses_any() -> None:
    """recon.reconcile_all takes nothing."""
    with pytest.raises(InvalidTaskPayload, match="no arguments"):
        check_arguments("recon.reconcile_all", {"x": 1})


@pytest.mark.parametrize("value", [None, 3, "", "   ", ["a"]])
def test_text_arguments_must_be_non_empty_strings(value: object) -> None:
    """Wrong types and blanks are refused, naming the argument."""
    with pytest.raises(InvalidTaskPayload, match="'account_id'"):
        require_text("t", "account_id", value)


def test_choice_names_the_unknown_value() -> None:
    """An unknown account is refused, naming the argument and the value."""
    with pytest.raises(InvalidTaskPayload, match="unknown account_id 'nope'"):
        require_choice("t", "account_id", "nope", {"cb-main"})
    assert require_choice("t", "account_id", "cb-main", {"cb-main"}) == "cb-main"


@pytest.mark.parametrize("value", [0, -1, 10_001, True, "5", 2.5])
def test_limit_must_be_a_positive_integer(value: object) -> None:
    """limit is an integer from 1 to 10 000; booleans, strings and floats are refused."""
    with pytest.raises(InvalidTaskPayload, match="'limit'"):
        require_limit("t", "limit", value)
