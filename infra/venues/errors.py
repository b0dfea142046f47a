"""The exception tree for venue failures. Every venue client raises only these.

::

    VenueError                      base; ``kind`` is the report's ``error.kind``
    ├── TransientVenueError         worth retrying in the same cycle
    │   ├── VenueTimeout            the request timed out                       kind=timeout
    │   ├── VenueUnavailable        connection refused/reset, 5xx, EService:*   kind=unavailable
    │   └── VenueRateLimited        429 / venue rate-limit error; retry_after   kind=rate_limited
    └── PermanentVenueError         not retried in this cycle
        ├── VenueAuthError          401/403 or a venue auth error               kind=auth
        ├── MalformedVenueResponse  not the documented JSON, or a bad amount    kind=malformed
        └── VenueConfigError        unknown account at the venue, other 4xx   kind=config

Messages never contain a balance amount or a secret: they name the venue, the HTTP status
and the failing field only.
"""

from __future__ import annotations

from domain.report import ErrorKind, SourceError


class VenueError(SourceError):
    """A venue account's balances could not be read."""

    kind: ErrorKind = ErrorKind.UNAVAILABLE

    def __init__(self, message: str) -> None:
        super().__init__(message)


class TransientVenueError(VenueError):
    """A failure that may pass: retried on the policy's schedule."""


class VenueTimeout(TransientVenueError):
    """The request did not complete within the per-request timeout."""

    kind = ErrorKind.TIMEOUT


class VenueUnavailable(TransientVenueError):
    """Connection refused or reset, a 5xx, or the venue said it is unavailable."""

    kind = ErrorKind.UNAVAILABLE


class VenueRateLimited(TransientVenueError):
    """The venue refused the request for its rate limit.

    ``retry_after`` is the wait the venue asked for, already converted to seconds
    (None when it gave none).
    """

    kind = ErrorKind.RATE_LIMITED

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentVenueError(VenueError):
    """A failure that retrying in this cycle cannot fix."""


class VenueAuthError(PermanentVenueError):
    """Credentials refused (401/403, or the venue's own auth error)."""

    kind = ErrorKind.AUTH


class MalformedVenueResponse(PermanentVenueError):
    """The body is not the documented JSON, or an amount is not a valid decimal."""

    kind = ErrorKind.MALFORMED


class VenueConfigError(PermanentVenueError):
    """The venue does not know the configured account (e.g. dYdX 404), or refused the request."""

    kind = ErrorKind.CONFIG
