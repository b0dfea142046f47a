"""The report and cycle JSON of DESIGN §5, as plain dicts, with exact Decimal round-trips.

Amounts are written as canonical decimal strings (:func:`domain.amounts.format_amount`) and
read back with :func:`domain.amounts.parse_amount`; timestamps are ISO 8601 in UTC with ``Z``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from domain.amounts import format_amount, parse_amount
from domain.discrepancy import Discrepancy, DiscrepancyType, Severity, Side
from domain.report import (
    Balances,
    Cycle,
    ErrorKind,
    FetchError,
    Recovery,
    RecoveryStatus,
    Report,
    Status,
)

JsonDict = dict[str, Any]


class SerializationError(ValueError):
    """Raised when a dict is not a valid report or cycle document."""


def format_timestamp(moment: datetime) -> str:
    """``moment`` in UTC as ISO 8601 with a ``Z`` suffix."""
    if moment.tzinfo is None:
        raise SerializationError("timestamps must be timezone-aware")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_timestamp(text: object) -> datetime:
    """Inverse of :func:`format_timestamp`."""
    if not isinstance(text, str):
        raise SerializationError("timestamp must be a string")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise SerializationError("timestamp is not ISO 8601") from exc
    if moment.tzinfo is None:
        raise SerializationError("timestamp has no timezone")
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
        raise SerializationError("timestamp is out of range") from exc


def balances_to_json(balances: Mapping[str, Decimal]) -> dict[str, str]:
    """Balances as ``{asset: decimal string}``, sorted by asset."""
    return {asset: format_amount(balances[asset]) for asset in sorted(balances)}


@functools.lru_cache(maxsize=8192)
def _json_key(asset: str) -> str:
    return json.dumps(asset, ensure_ascii=False)


def balances_to_json_text(balances: Mapping[str, Decimal]) -> str:
    """``json.dumps(balances_to_json(balances), separators=(",", ":"), ensure_ascii=False)``,
    built directly: the audit store writes two of these per report, 100,000 amounts per cycle
    at a fund's scale. Amount strings hold only digits, ``-`` and ``.``: nothing to escape."""
    parts = [f'{_json_key(asset)}:"{format_amount(balances[asset])}"' for asset in sorted(balances)]
    return "{" + ",".join(parts) + "}"


def balances_from_json(data: object) -> dict[str, Decimal]:
    """Inverse of :func:`balances_to_json`."""
    if not isinstance(data, dict):
        raise SerializationError("balances must be an object")
    try:
        return {str(asset): parse_amount(amount) for asset, amount in data.items()}
    except ValueError as exc:
        raise SerializationError(f"bad balance amount: {exc}") from exc


def discrepancy_to_json(d: Discrepancy) -> JsonDict:
    data: JsonDict = {
        "type": d.type.value,
        "asset": d.asset,
        "local": format_amount(d.local),
        "exchange": format_amount(d.exchange),
        "diff": format_amount(d.diff),
        "value_usd": None if d.value_usd is None else format_amount(d.value_usd),
        "severity": d.severity.name,
    }
    if d.missing_from is not None:
        data["missing_from"] = d.missing_from.value
    return data


def discrepancy_from_json(data: JsonDict) -> Discrepancy:
    try:
        value = data["value_usd"]
        missing = data.get("missing_from")
        return Discrepancy(
            type=DiscrepancyType(data["type"]),
            asset=str(data["asset"]),
            local=parse_amount(data["local"]),
            exchange=parse_amount(data["exchange"]),
            diff=parse_amount(data["diff"]),
            value_usd=None if value is None else parse_amount(value),
            severity=Severity[data["severity"]],
            missing_from=None if missing is None else Side(missing),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SerializationError(f"bad discrepancy: {exc!r}") from exc


def error_to_json(error: FetchError | None) -> JsonDict | None:
    if error is None:
        return None
    return {"kind": error.kind.value, "message": error.message}


def error_from_json(data: object) -> FetchError | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise SerializationError("error must be an object or null")
    try:
        return FetchError(ErrorKind(data["kind"]), str(data["message"]))
    except (KeyError, ValueError) as exc:
        raise SerializationError(f"bad error object: {exc!r}") from exc


def recovery_to_json(recovery: Recovery | None) -> JsonDict | None:
    """The report's ``recovery`` object (None when no confirmation was attempted)."""
    if recovery is None:
        return None
    return {
        "status": recovery.status.value,
        "checked_at": format_timestamp(recovery.checked_at),
        "found_status": None if recovery.found_status is None else recovery.found_status.value,
        "discrepancies": [discrepancy_to_json(d) for d in recovery.discrepancies],
        "error": error_to_json(recovery.error),
    }


def recovery_from_json(data: object) -> Recovery | None:
    """Inverse of :func:`recovery_to_json`."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise SerializationError("recovery must be an object or null")
    try:
        found = data["found_status"]
        return Recovery(
            status=RecoveryStatus(data["status"]),
            checked_at=parse_timestamp(data["checked_at"]),
            found_status=None if found is None else Status(found),
            discrepancies=tuple(discrepancy_from_json(d) for d in data["discrepancies"]),
            error=error_from_json(data.get("error")),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SerializationError(f"bad recovery: {exc!r}") from exc


def report_to_json(report: Report) -> JsonDict:
    """The report JSON of DESIGN §5."""
    return {
        "reconciliation_id": report.reconciliation_id,
        "cycle_id": report.cycle_id,
        "account_id": report.account_id,
        "exchange": report.exchange,
        "reconciled_at": format_timestamp(report.reconciled_at),
        "status": report.status.value,
        "error": error_to_json(report.error),
        "local_balances": balances_to_json(report.local_balances),
        "exchange_balances": balances_to_json(report.exchange_balances),
        "discrepancies": [discrepancy_to_json(d) for d in report.discrepancies],
        "recovery": recovery_to_json(report.recovery),
    }


def report_from_json(data: JsonDict) -> Report:
    """Inverse of :func:`report_to_json`; the status is recomputed and must agree."""
    try:
        report = Report(
            reconciliation_id=str(data["reconciliation_id"]),
            cycle_id=str(data["cycle_id"]),
            account_id=str(data["account_id"]),
            exchange=str(data["exchange"]),
            reconciled_at=parse_timestamp(data["reconciled_at"]),
            local_balances=balances_from_json(data["local_balances"]),
            exchange_balances=balances_from_json(data["exchange_balances"]),
            discrepancies=tuple(discrepancy_from_json(d) for d in data["discrepancies"]),
            error=error_from_json(data.get("error")),
            recovery=recovery_from_json(data.get("recovery")),
        )
    except (KeyError, TypeError) as exc:
        raise SerializationError(f"bad report: {exc!r}") from exc
    except ValueError as exc:
        raise SerializationError(f"bad report: {exc}") from exc
    if "status" in data and data["status"] != report.status.value:
        raise SerializationError("report status disagrees with its contents")
    return report


def cycle_to_json(cycle: Cycle) -> JsonDict:
    """The cycle JSON of DESIGN §5."""
    return {
        "cycle_id": cycle.cycle_id,
        "started_at": format_timestamp(cycle.started_at),
        "finished_at": format_timestamp(cycle.finished_at),
        "status": cycle.status.value,
        "reports": [report_to_json(r) for r in cycle.reports],
    }


def cycle_from_json(data: JsonDict) -> Cycle:
    """Inverse of :func:`cycle_to_json`."""
    try:
        return Cycle(
            cycle_id=str(data["cycle_id"]),
            started_at=parse_timestamp(data["started_at"]),
            finished_at=parse_timestamp(data["finished_at"]),
            reports=tuple(report_from_json(r) for r in data["reports"]),
        )
    except (KeyError, TypeError) as exc:
        raise SerializationError(f"bad cycle: {exc!r}") from exc


__all__ = [
    "Balances",
    "SerializationError",
    "balances_from_json",
    "balances_to_json",
    "cycle_from_json",
    "cycle_to_json",
    "format_timestamp",
    "parse_timestamp",
    "report_from_json",
    "report_to_json",
]
