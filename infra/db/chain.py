"""The audit hash chain (DESIGN §5, Audit chain): the hash of one row of ``reconciliation_audit``.

``row_hash`` is the SHA-256 (lower-case hex) of a canonical JSON object holding the row's own
recorded facts and ``prev_hash``, the ``row_hash`` of the previous row (by ``id``) of the same
account, ``null`` for an account's first row. Canonical: keys sorted, no whitespace, UTF-8, the
timestamp in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always six fraction digits), the JSON
columns hashed as the exact text stored. Pure: stdlib only, no database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

#: The columns whose values a row's hash covers (with ``prev_hash``).
HASHED_COLUMNS: Final = (
    "reconciliation_id",
    "cycle_id",
    "account_id",
    "exchange_id",
    "reconciliation_timestamp",
    "status",
    "discrepancy_count",
    "local_balances_json",
    "exchange_balances_json",
    "discrepancies_json",
    "error_json",
)


def _timestamp(moment: object) -> str:
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise TypeError("reconciliation_timestamp must be a timezone-aware datetime")
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    return f"{text}Z"


def canonical_facts(facts: Mapping[str, object], prev_hash: str | None) -> bytes:
    """The bytes hashed for a row with ``facts`` (at least :data:`HASHED_COLUMNS`)."""
    document: dict[str, object] = {name: facts[name] for name in HASHED_COLUMNS}
    document["reconciliation_timestamp"] = _timestamp(facts["reconciliation_timestamp"])
    count = facts["discrepancy_count"]
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError("discrepancy_count must be an integer")
    document["prev_hash"] = prev_hash or None
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def row_hash(facts: Mapping[str, object], prev_hash: str | None) -> str:
    """SHA-256 (hex) of a row's facts chained to ``prev_hash`` (``None`` or "" for the first)."""
    return hashlib.sha256(canonical_facts(facts, prev_hash)).hexdigest()


#: Stands for ``prev_hash`` while a row's canonical bytes are prepared: it cannot occur as
#: such in the bytes otherwise, since a quote inside a JSON string is always escaped.
_PREV_SENTINEL: Final = "prev-hash-not-known-yet"
_PREV_FIELD: Final = b'"prev_hash":'


class PreparedRow:
    """A row's canonical bytes (:func:`canonical_facts`) split around ``prev_hash``, so that the
    costly encoding happens before the writer knows the previous row's hash: hashing with it
    (:meth:`hash_with`) is then one SHA-256 over bytes already built, and gives exactly
    :func:`row_hash`."""

    __slots__ = ("_head", "_tail")

    def __init__(self, facts: Mapping[str, object]) -> None:
        encoded = canonical_facts(facts, _PREV_SENTINEL)
        marker = _PREV_FIELD + json.dumps(_PREV_SENTINEL).encode("ascii")
        head, found, tail = encoded.partition(marker)
        if not found or marker in tail:
            raise ValueError("a row's canonical bytes must hold prev_hash exactly once")
        self._head = hashlib.sha256(head + _PREV_FIELD)
        self._tail = tail

    def hash_with(self, prev_hash: str | None) -> str:
        """:func:`row_hash` of these facts chained to ``prev_hash``."""
        digest = self._head.copy()
        digest.update(json.dumps(prev_hash or None, ensure_ascii=False).encode("utf-8"))
        digest.update(self._tail)
        return digest.hexdigest()


__all__ = ["HASHED_COLUMNS", "PreparedRow", "canonical_facts", "row_hash"]
