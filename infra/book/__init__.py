"""The desk's book (position manager): what it believes each account holds, per asset."""

from infra.book.document import BookDocument, BookError, parse_book_json
from infra.book.file_book import FileBook, load_book_document

__all__ = ["BookDocument", "BookError", "FileBook", "load_book_document", "parse_book_json"]
