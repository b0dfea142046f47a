"""The book document (DESIGN §2): ``{"as_of": …, "accounts": {id: {asset: amount}}}``.

Shared by the file source and the http source (whose GET returns the same JSON). Amounts are
decimal strings; JSON numbers are accepted and parsed exactly, never through float. A bad
document fails as a whole, closed: a partly corrupt book is not trusted for any account.

::

    BookError (a domain SourceError)  the book could not be used; ``kind`` says why:
        kind=malformed                not the documented JSON, or an amount not a finite decimal
        kind=unavailable              the file or the service could not be read at all

Messages name the source, the account and the asset, never an amount.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from domain.amounts import InvalidAmount, parse_amount
from domain.report import ErrorKind, SourceError


class BookError(SourceError):
    """The book could not be read (``kind`` unavailable) or is not a valid book (malformed)."""

    def __init__(self, message: str, kind: ErrorKind) -> None:
        super().__init__(message, kind)


@dataclass(frozen=True, slots=True)
class BookDocument:
    """A parsed book: when it was drawn up (if it says) and each account's balances."""

    as_of: datetime | None
    accounts: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        frozen = {k: MappingProxyType(dict(v)) for k, v in self.accounts.items()}
        object.__setattr__(self, "accounts", MappingProxyType(frozen))

    def balances(self, account_id: str) -> dict[str, Decimal]:
        """The account's balances; an account absent from the book has an empty book."""
        return dict(self.accounts.get(account_id, {}))

    def as_dict(self) -> dict[str, dict[str, Decimal]]:
        """Every account's balances as plain dictionaries."""
        return {account_id: dict(assets) for account_id, assets in self.accounts.items()}


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Two entries for one account or one asset are ambiguous: refuse, never keep the last."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(key)
        obj[key] = value
    return obj


def parse_book_json(raw: bytes, source: str) -> BookDocument:
    """Parse a book document; ``source`` (a path or URL) names it in every error message."""
    try:
        document = json.loads(
            raw,
            parse_float=Decimal,
            parse_int=Decimal,
            parse_constant=Decimal,  # NaN / Infinity: refused below, with account and asset
            object_pairs_hook=_refuse_duplicates,
        )
    except _DuplicateKey as exc:
        raise _malformed(f"{source}: key {exc.key!r} appears twice in one object") from None
    except UnicodeDecodeError:
        raise _malformed(f"{source}: not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        detail = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise _malformed(f"{source}: not valid JSON ({detail})") from None
    except RecursionError:
        raise _malformed(f"{source}: not valid JSON (nested too deeply)") from None

    if not isinstance(document, dict):
        raise _malformed(f"{source}: the book must be a JSON object")
    accounts = document.get("accounts")
    if not isinstance(accounts, dict):
        raise _malformed(f"{source}: 'accounts' must be an object of account id → balances")
    return BookDocument(
        as_of=_as_of(document.get("as_of"), source),
        accounts={
            account_id: _balances(account_id, assets, source)
            for account_id, assets in accounts.items()
        },
    )


def _balances(account_id: str, assets: object, source: str) -> dict[str, Decimal]:
    where = f"{source}: account {account_id!r}"
    if not isinstance(assets, dict):
        raise _malformed(f"{where}: must be an object of asset → amount")
    balances: dict[str, Decimal] = {}
    for asset, amount in assets.items():
        if not asset.strip():
            raise _malformed(f"{where}: an asset code is empty")
        try:
            balances[asset] = parse_amount(amount)
        except InvalidAmount as exc:
            raise _malformed(f"{where}: asset {asset!r}: {exc}") from None
    return balances


def _as_of(value: object, source: str) -> datetime | None:
    """The book's own timestamp; a time without a zone is taken as UTC."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _malformed(f"{source}: 'as_of' must be an ISO 8601 time string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _malformed(f"{source}: 'as_of' is not an ISO 8601 time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _malformed(message: str) -> BookError:
    return BookError(message, ErrorKind.MALFORMED)
