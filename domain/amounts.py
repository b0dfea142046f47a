"""Exact decimal amounts: parsing from venue/book text and the canonical string form.

Every amount in recon is a :class:`decimal.Decimal`; amounts cross every boundary (JSON,
Celery, the database) as the strings produced by :func:`format_amount`.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Final

#: Larger magnitudes are treated as corrupt input, not as balances (10^20 exceeds any real
#: holding of any asset, and keeps "1e400"-style bodies from reaching arithmetic).
MAX_MAGNITUDE: Final = Decimal("1e20")
#: More fractional digits than this is not a real venue amount (Coinbase uses 16, ERC-20 18).
MAX_FRACTION_DIGITS: Final = 30

ZERO: Final = Decimal(0)

#: Context for every arithmetic operation on amounts: wide enough that no sum or product
#: of valid amounts is ever rounded.
AMOUNT_CONTEXT: Final = decimal.Context(
    prec=80,
    Emax=999,
    Emin=-999,
    traps=[
        decimal.InvalidOperation,
        decimal.DivisionByZero,
        decimal.Overflow,
        decimal.Inexact,
    ],
)


class InvalidAmount(ValueError):
    """Raised when a text or number is not a finite, bounded decimal amount."""


def parse_amount(value: object, *, allow_negative: bool = True) -> Decimal:
    """Parse ``value`` (a decimal string, an int or a Decimal) into an exact amount.

    Floats are refused: a float has already lost the exact value. Booleans are refused.
    The error message never repeats the value, which may be a balance.
    """
    if isinstance(value, (bool, float)):
        raise InvalidAmount(f"amount must be a decimal string, not {type(value).__name__}")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 100:
            raise InvalidAmount("amount is empty or too long")
        try:
            amount = Decimal(text)
        except decimal.InvalidOperation as exc:
            raise InvalidAmount("amount is not a decimal number") from exc
    else:
        raise InvalidAmount(f"amount must be a decimal string, not {type(value).__name__}")
    if not amount.is_finite():
        raise InvalidAmount("amount is not finite (NaN or Infinity)")
    # copy_abs, not abs(): abs() rounds to the context and overflows on a huge exponent.
    if amount.copy_abs() >= MAX_MAGNITUDE:
        raise InvalidAmount("amount is out of range")
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)  # finite decimals always have an int exponent
    if -exponent > MAX_FRACTION_DIGITS:
        raise InvalidAmount("amount has too many fractional digits")
    if not allow_negative and amount < 0:
        raise InvalidAmount("amount is negative where the field is unsigned")
    return amount


def format_amount(amount: Decimal) -> str:
    """The canonical string of ``amount``: fixed-point, no exponent, no trailing zeros.

    ``parse_amount(format_amount(x)) == x`` for every valid amount.
    """
    # One format() call, then string work: this runs for every amount of every report
    # (100,000 per cycle at a fund's scale), so it avoids the slower Decimal comparisons.
    text = format(amount, "f")
    if not text[-1].isdigit():  # "NaN", "sNaN", "Infinity", "-Infinity"
        raise InvalidAmount("amount is not finite (NaN or Infinity)")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("0", "-0"):
        return "0"
    return text


def add(a: Decimal, b: Decimal) -> Decimal:
    """Exact sum of two amounts (raises instead of rounding)."""
    return AMOUNT_CONTEXT.add(a, b)


def subtract(a: Decimal, b: Decimal) -> Decimal:
    """Exact difference ``a - b`` (raises instead of rounding)."""
    return AMOUNT_CONTEXT.subtract(a, b)


def multiply(a: Decimal, b: Decimal) -> Decimal:
    """Exact product of two amounts (raises instead of rounding)."""
    return AMOUNT_CONTEXT.multiply(a, b)
