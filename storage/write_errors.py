"""Is a failed write the data's fault (permanent) or the database's (transient)?

A write that fails because of one row's values fails the same way on every retry: retrying
it as an outage stops the partition for good. This module tells the two apart, from the
SQLSTATE where the server sent one and from the error class where the driver refused the
value before sending it (a NUL byte, a string that cannot be encoded).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exc as sa_exc

# SQLSTATE classes caused by the values of the statement: 22 data exception (value too
# long, invalid text, out of range, untranslatable character), 23 integrity violation.
PERMANENT_SQLSTATE_CLASSES = frozenset({"22", "23"})
# Errors raised by the driver while adapting one row's parameters.
_PERMANENT_PYTHON_ERRORS = (UnicodeError, ValueError, TypeError, OverflowError)


@dataclass(frozen=True)
class WriteFailure:
    """What a failed write says about itself.

    Attributes:
        permanent: True when the rows' values caused it (retrying cannot succeed); False for
            connection-level and deployment faults (server down, schema missing), which
            heal or need an operator and must pause the worker instead.
        sqlstate: The server's SQLSTATE (e.g. ``22021``), or None when none was sent.
        error_class: Class name of the underlying error (e.g. ``DataError``).
        message: The error's first line.
    """

    permanent: bool
    sqlstate: str | None
    error_class: str
    message: str


def classify_write_error(error: BaseException) -> WriteFailure:
    """Classify an exception raised while writing a batch.

    Args:
        error: Anything the write raised (SQLAlchemy-wrapped or raw driver/Python errors).

    Returns:
        The classification; see :class:`WriteFailure`.
    """
    underlying: BaseException = error
    if isinstance(error, sa_exc.StatementError) and error.orig is not None:
        underlying = error.orig
    sqlstate = getattr(underlying, "sqlstate", None) or getattr(underlying, "pgcode", None)
    sqlstate = sqlstate if isinstance(sqlstate, str) else None
    message = _first_line(underlying)
    name = type(underlying).__name__
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return WriteFailure(False, sqlstate, name, message)
    if sqlstate is not None:
        return WriteFailure(sqlstate[:2] in PERMANENT_SQLSTATE_CLASSES, sqlstate, name, message)
    if isinstance(error, sa_exc.DataError | sa_exc.IntegrityError):
        # The driver refused a value client-side (psycopg: "PostgreSQL text fields cannot
        # contain NUL (0x00) bytes") without a server round trip.
        return WriteFailure(True, None, name, message)
    if isinstance(error, sa_exc.DBAPIError):  # Operational, Interface, Programming, ...
        return WriteFailure(False, None, name, message)
    if isinstance(underlying, _PERMANENT_PYTHON_ERRORS):
        return WriteFailure(True, None, name, message)
    return WriteFailure(False, None, name, message)


def _first_line(error: BaseException, limit: int = 300) -> str:
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text[:limit]
