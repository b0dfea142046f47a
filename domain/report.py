"""Reports (one account, one cycle) and cycles (every account of one run), with their status."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType

from domain.discrepancy import Discrepancy, Severity


class Status(enum.StrEnum):
    """A report's or a cycle's outcome; the order of the members is their order of badness."""

    SUCCESS = "SUCCESS"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        return _STATUS_ORDER.index(self)

    @classmethod
    def of_severity(cls, severity: Severity | None) -> Status:
        """None or INFO → SUCCESS; otherwise the status named like the severity."""
        if severity is None or severity is Severity.INFO:
            return cls.SUCCESS
        return cls(severity.name)

    @classmethod
    def worst(cls, statuses: Iterable[Status]) -> Status:
        """The worst of ``statuses``; SUCCESS when there are none."""
        return max(statuses, key=lambda s: s.rank, default=cls.SUCCESS)


_STATUS_ORDER = (Status.SUCCESS, Status.WARNING, Status.ERROR, Status.CRITICAL)


class ErrorKind(enum.StrEnum):
    """Why an account could not be reconciled (DESIGN §3 and §5)."""

    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"
    AUTH = "auth"
    MALFORMED = "malformed"
    CONFIG = "config"


@dataclass(frozen=True, slots=True)
class FetchError:
    """A side that could not be read: the kind, and a message free of amounts and secrets."""

    kind: ErrorKind
    message: str


class SourceError(Exception):
    """A side (the venue or the book) could not be read; adapters raise subclasses.

    ``message`` is recorded in the report: it never holds an amount or a secret.
    """

    kind: ErrorKind = ErrorKind.UNAVAILABLE

    def __init__(self, message: str, kind: ErrorKind | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind

    def to_fetch_error(self) -> FetchError:
        """The value recorded in the account's report."""
        return FetchError(self.kind, self.message)


Balances = Mapping[str, Decimal]


class RecoveryStatus(enum.StrEnum):
    """The confirming re-fetch's verdict (see :mod:`domain.confirmation`)."""

    SUCCESS = "SUCCESS"  # the break is gone: a timing break
    FAILED = "FAILED"  # the break stays (or the re-fetch failed): confirmed


@dataclass(frozen=True, slots=True)
class Recovery:
    """What the confirming re-fetch found."""

    status: RecoveryStatus
    checked_at: datetime
    #: the re-fetch's own status (None when it could not be read)
    found_status: Status | None
    discrepancies: tuple[Discrepancy, ...] = ()
    error: FetchError | None = None


def frozen_balances(balances: Mapping[str, Decimal]) -> Balances:
    """An immutable copy of ``balances``."""
    return MappingProxyType(dict(balances))


@dataclass(frozen=True, slots=True)
class Report:
    """The reconciliation of one account in one cycle (DESIGN §5)."""

    reconciliation_id: str
    cycle_id: str
    account_id: str
    exchange: str
    reconciled_at: datetime
    local_balances: Balances
    exchange_balances: Balances
    discrepancies: tuple[Discrepancy, ...] = ()
    error: FetchError | None = None
    #: set when the report's breaks were checked again (DESIGN §5, Confirmation)
    recovery: Recovery | None = None
    status: Status = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "local_balances", frozen_balances(self.local_balances))
        object.__setattr__(self, "exchange_balances", frozen_balances(self.exchange_balances))
        assets = [d.asset for d in self.discrepancies]
        if len(assets) != len(set(assets)):
            raise ValueError("a report holds each asset at most once")
        if self.error is not None and (self.discrepancies or self.exchange_balances):
            raise ValueError("a failed report holds no exchange balances and no discrepancies")
        object.__setattr__(self, "status", self._status())

    def _status(self) -> Status:
        if self.error is not None:
            return Status.ERROR
        worst = max((d.severity for d in self.discrepancies), default=None)
        return Status.of_severity(worst)


@dataclass(frozen=True, slots=True)
class Cycle:
    """Every report of one reconciliation run; its status is its worst report's."""

    cycle_id: str
    started_at: datetime
    finished_at: datetime
    reports: tuple[Report, ...]
    status: Status = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status.worst(r.status for r in self.reports))
