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


class SchemaNotCurrentError(StorageError):
    """The database is not at the schema revision this code needs (run ``agpt db upgrade``)."""


class DatabaseUnreachableError(StorageError):
    """The database server cannot be reached or refused the connection."""


class UnsupportedDatabaseError(StorageError):
    """The session is bound to a backend other than SQLite or PostgreSQL."""


class UserNotFoundError(StorageError, LookupError):
    """No account has the given name."""

    def __init__(self, name: str) -> None:
        """Name the missing account.

        Args:
            name: The user name that was looked up.
        """
        super().__init__(f"user {name!r} does not exist")
        self.name = name


class UserExistsError(StorageError):
    """An account of that name exists already."""

    def __init__(self, name: str) -> None:
        """Name the taken account.

        Args:
            name: The user name.
        """
        super().__init__(f"user {name!r} exists already")
        self.name = name


class PermissionDeniedError(StorageError, PermissionError):
    """The acting user may not do this: unknown, disabled, or below the required role."""


class ImageUnavailableError(StorageError):
    """A frame's image is needed (e.g. to add it to the pool) but is not stored."""
