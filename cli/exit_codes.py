"""Process exit codes of the ``recon`` CLI (documented in the README)."""

from __future__ import annotations

import enum

from domain.report import Status


class ExitCode(enum.IntEnum):
    """Distinct codes so a desk's scripts can tell the outcomes apart."""

    OK = 0  # every report SUCCESS or WARNING
    USAGE = 2  # bad command line (click's own code)
    ERROR = 3  # at least one report ERROR, none CRITICAL
    CRITICAL = 4  # at least one report CRITICAL
    CONFIG = 5  # configuration refused before any work: no request, no audit row
    AUDIT_STORE = 6  # the audit store failed: the cycle's rows were rolled back
    AUDIT_TAMPERED = 7  # recon audit verify: the chain is broken or rows are not frozen
    SYNC_REFUSED = 8  # recon sync: refused (not authorised, no reason, book not writable)
    SYNC_FAILED = 9  # recon sync: the venue or the book write failed; the book is unchanged

    @classmethod
    def of_status(cls, status: Status) -> ExitCode:
        """OK for SUCCESS and WARNING; ERROR and CRITICAL map to their own codes."""
        if status is Status.CRITICAL:
            return cls.CRITICAL
        if status is Status.ERROR:
            return cls.ERROR
        return cls.OK
