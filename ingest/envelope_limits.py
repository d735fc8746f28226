"""What the database can store, checked when a frame is decoded: one set of limits.

Every envelope field ends up in a column of ``storage.models.Frame``; a value the column
refuses (too long, a NUL byte, a lone surrogate, a non-finite JSON number, a time that
overflows on conversion to UTC) is refused here, with a reason code, instead of failing the
worker's insert. ``tests/ingest/test_envelope_limits.py`` derives these limits from the ORM
columns, so the two cannot drift apart.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

# Longest value, in characters, of each text field: the length of its column
# (``frames.camera_id`` VARCHAR(128), ``frames.frame_id`` VARCHAR(256), ...). ``image_uri``
# is TEXT in the database; the bound here keeps URIs to what a path or object key can be.
TEXT_FIELD_MAX_CHARS = {"camera_id": 128, "frame_id": 256, "product": 128, "image_uri": 4096}
# Metadata is stored as JSON(B): deeper structures than this are refused as hostile.
METADATA_MAX_DEPTH = 16
_HEX = frozenset("0123456789abcdefABCDEF")


class LimitViolation(ValueError):
    """A field value the database cannot store; ``reason`` is the DLQ / metrics code."""

    def __init__(self, message: str, *, reason: str, field_name: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field_name = field_name


def unstorable_text(value: str) -> str | None:
    """Why PostgreSQL cannot store ``value`` as text, or None when it can.

    PostgreSQL text (and JSONB strings) hold UTF-8 without NUL: a NUL character and a lone
    surrogate (U+DC80, which has no UTF-8 encoding) are refused.
    """
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate at character {exc.start}"
    return None


def check_text_field(name: str, value: str) -> None:
    """Refuse a text field the database column cannot hold.

    Raises:
        LimitViolation: ``too_long`` above the column length, ``bad_text`` for NUL or a
            lone surrogate.
    """
    limit = TEXT_FIELD_MAX_CHARS[name]
    if len(value) > limit:
        msg = f"frame field '{name}' is {len(value)} characters, above the {limit}-character limit"
        raise LimitViolation(msg, reason="too_long", field_name=name)
    problem = unstorable_text(value)
    if problem is not None:
        msg = f"frame field '{name}' {problem}"
        raise LimitViolation(msg, reason="bad_text", field_name=name)


def check_sha256(value: str) -> None:
    """Refuse anything but 64 hexadecimal characters.

    Raises:
        LimitViolation: ``bad_field``.
    """
    if len(value) != 64 or not _HEX.issuperset(value):
        msg = "frame field 'image_sha256' must be 64 hex characters"
        raise LimitViolation(msg, reason="bad_field", field_name="image_sha256")


def check_captured_at(value: datetime) -> None:
    """Refuse a capture time that cannot be stored as a UTC timestamp.

    ``0001-01-01T00:00:00+05:00`` is a valid ISO-8601 time whose UTC value lies before year 1.

    Raises:
        LimitViolation: ``out_of_range``.
    """
    try:
        value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        msg = f"frame field 'captured_at' {value.isoformat()} is out of range in UTC ({exc})"
        raise LimitViolation(msg, reason="out_of_range", field_name="captured_at") from exc


def check_metadata(value: Any) -> None:
    """Refuse metadata that JSONB cannot store or that is nested too deeply.

    Raises:
        LimitViolation: ``bad_text`` (NUL / lone surrogate in a key or string),
            ``non_finite`` (NaN, Infinity: Python's JSON reads them, JSONB does not),
            ``bad_field`` (not JSON data, or deeper than :data:`METADATA_MAX_DEPTH`).
    """
    _check_json(value, depth=0, path="metadata")


def _check_json(value: Any, *, depth: int, path: str) -> None:
    if depth > METADATA_MAX_DEPTH:
        msg = f"frame field 'metadata' is nested deeper than {METADATA_MAX_DEPTH} levels"
        raise LimitViolation(msg, reason="bad_field", field_name="metadata")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            where = _printable(path)
            msg = f"frame field 'metadata' holds a non-finite number ({value!r}) at {where}"
            raise LimitViolation(msg, reason="non_finite", field_name="metadata")
        return
    if isinstance(value, str):
        problem = unstorable_text(value)
        if problem is not None:
            msg = f"frame field 'metadata' string at {_printable(path)} {problem}"
            raise LimitViolation(msg, reason="bad_text", field_name="metadata")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json(item, depth=depth + 1, path=f"{path}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                msg = f"frame field 'metadata' has a non-string key at {_printable(path)}"
                raise LimitViolation(msg, reason="bad_field", field_name="metadata")
            problem = unstorable_text(key)
            if problem is not None:
                msg = f"frame field 'metadata' key at {_printable(path)} {problem}"
                raise LimitViolation(msg, reason="bad_text", field_name="metadata")
            _check_json(item, depth=depth + 1, path=f"{path}.{key}")
        return
    where = _printable(path)
    msg = f"frame field 'metadata' holds a {type(value).__name__} at {where}, not JSON data"
    raise LimitViolation(msg, reason="bad_field", field_name="metadata")


def _printable(text: str, limit: int = 80) -> str:
    """``text`` safe for a log line or a Kafka header: escaped, UTF-8 encodable, bounded."""
    escaped = text.encode("utf-8", "backslashreplace").decode("utf-8")
    escaped = escaped.replace("\x00", "\\x00")
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"
