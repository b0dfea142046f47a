"""The book as a JSON file on disk (``[book] source = "file"``), re-read when it changes.

A desk rewrites its book between cycles: every read stats the file and parses it again only
when it is a different file or its size or times changed, so a cycle over a thousand accounts
parses it once, and an update is seen by the next read.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

from domain.report import ErrorKind
from infra.book.document import BookDocument, BookError, parse_book_json

_FileStamp = tuple[int, int, int, int, int]


class FileBook:
    """The book JSON at ``path`` (DESIGN §2); satisfies the cycle's ``BookSource``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cached: tuple[_FileStamp, BookDocument] | None = None

    def balances(self, account_id: str) -> dict[str, Decimal]:
        """What the book says ``account_id`` holds (empty when the book does not list it)."""
        return self.document().balances(account_id)

    def document(self) -> BookDocument:
        """The whole book as the file holds it now; BookError when unreadable or malformed."""
        try:
            stamp = _stamp(self.path.stat())
            cached = self._cached
            if cached is not None and cached[0] == stamp:
                return cached[1]
            raw = self.path.read_bytes()
        except OSError as exc:
            raise BookError(
                f"{self.path}: cannot read the book file ({exc.strerror})", ErrorKind.UNAVAILABLE
            ) from None
        document = parse_book_json(raw, str(self.path))
        self._cached = (stamp, document)
        return document


def _stamp(stat: os.stat_result) -> _FileStamp:
    """What changes when the file is rewritten in place or replaced by a rename."""
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def load_book_document(path: Path) -> dict[str, dict[str, Decimal]]:
    """Every account's balances in the book file at ``path``; BookError when it cannot be used."""
    return FileBook(path).document().as_dict()
