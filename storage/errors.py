"""Errors raised by the repositories."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error raised by ``storage``."""


class NotFoundError(StorageError, LookupError):
    """A row addressed by id does not exist; subclasses name the kind of row."""

    kind = "row"

    def __init__(self, row_id: int) -> None:
        """Name the missing row.

        Args:
            row_id: The id that was looked up.
        """
        super().__init__(f"{self.kind} {row_id} does not exist")
        self.row_id = row_id


class VerdictNotFoundError(NotFoundError):
    """No verdict has the given id."""

    kind = "verdict"


class PoolEntryNotFoundError(NotFoundError):
    """No pool entry has the given id."""

    kind = "pool entry"


class UnsupportedDatabaseError(StorageError):
    """The session is bound to a backend other than SQLite or PostgreSQL."""
