"""Give the memory of a fund-sized join back to the system once the join is done.

A join holds a whole cycle at once — every account's venue balances, decoded from the chord's
message, the reports, the audit rows' JSON, the result — tens of MB at 1,000 accounts × 50
assets, most of it freed when the task ends. glibc keeps freed memory in its arenas (one per
thread that allocated, in a threaded worker), so the worker's RSS ratchets up from cycle to
cycle. ``malloc_trim(0)`` returns those free pages. Measured with the bench (S2-sized, 1,000 ×
50, 8 cycles, 2 threaded workers): RSS growth +11.8 MB a cycle without, +4.4 MB with it, the
cycle time unchanged (3.6 s and 3.8 s, within the noise).

Where the C library has no ``malloc_trim`` (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable
from typing import Any, Final

from celery import Task, signals

log = logging.getLogger(__name__)

#: The tasks after which the worker trims: the joins, which hold a whole cycle.
TRIM_AFTER: Final = frozenset({"recon.compare_and_report", "recon.confirm_breaks"})


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_freed_memory() -> bool:
    """Return the C heap's free pages to the system; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@signals.task_postrun.connect
def _after_join(sender: Task[Any, Any] | None = None, **_: Any) -> None:
    if sender is not None and sender.name in TRIM_AFTER:
        release_freed_memory()


__all__ = ["TRIM_AFTER", "release_freed_memory"]
