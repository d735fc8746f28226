"""The versioned frame envelope: what a camera sends, and its wire encoding.

Wire format (one Kafka message value)::

    b"AGPT" | u8 schema_version | u32 big-endian header length | JSON header | image bytes

The JSON header carries every field but the image; the image bytes follow raw (no base64).
A frame may instead carry ``image_uri`` + ``image_sha256`` (claim check) and no bytes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ingest.envelope_limits import (
    LimitViolation,
    check_captured_at,
    check_metadata,
    check_sha256,
    check_text_field,
)

MAGIC = b"AGPT"
SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
_PREFIX = struct.Struct(">4sBI")
_MAX_HEADER_BYTES = 64 * 1024
IMAGE_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg"}


class FrameError(ValueError):
    """A frame that cannot be processed; ``reason`` is a short stable code for metrics/DLQ."""

    def __init__(self, message: str, *, reason: str, field_name: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field_name = field_name


@dataclass(frozen=True)
class FrameEnvelope:
    """One camera frame.

    Attributes:
        camera_id: Camera identifier; also the Kafka key (order per camera).
        frame_id: Camera-unique frame identifier; (camera_id, frame_id) is the idempotency key.
        product: Product / part type; selects the few-shot pool.
        captured_at: Capture time (timezone-aware, UTC recommended).
        image: Encoded PNG or JPEG bytes, or None when ``image_uri`` is used.
        image_uri: Claim-check URI of the image when it is stored outside the message.
        image_sha256: Hex SHA-256 of the encoded image; required with ``image_uri``.
        metadata: Free-form JSON-serialisable annotations (line, shift, lot...).
        schema_version: Envelope schema version.
    """

    camera_id: str
    frame_id: str
    product: str
    captured_at: datetime
    image: bytes | None = None
    image_uri: str | None = None
    image_sha256: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        validate(self)

    @property
    def key(self) -> bytes:
        """Partitioning key: frames of one camera stay ordered."""
        return self.camera_id.encode()

    def encode(self) -> bytes:
        """Serialise to the wire format."""
        header = {
            "camera_id": self.camera_id,
            "frame_id": self.frame_id,
            "product": self.product,
            "captured_at": self.captured_at.isoformat(),
            "image_uri": self.image_uri,
            "image_sha256": self.image_sha256,
            "metadata": self.metadata,
        }
        raw = json.dumps(header, separators=(",", ":")).encode()
        return _PREFIX.pack(MAGIC, self.schema_version, len(raw)) + raw + (self.image or b"")


def _require_str(header: dict[str, Any], name: str) -> str:
    value = header.get(name)
    if value is None:
        msg = f"frame field '{name}' is missing"
        raise FrameError(msg, reason="missing_field", field_name=name)
    if not isinstance(value, str) or not value.strip():
        msg = f"frame field '{name}' must be a non-empty string, got {type(value).__name__}"
        raise FrameError(msg, reason="bad_field", field_name=name)
    return value


def _parse_time(value: Any) -> datetime:
    if value is None:
        msg = "frame field 'captured_at' is missing"
        raise FrameError(msg, reason="missing_field", field_name="captured_at")
    if not isinstance(value, str):
        msg = f"frame field 'captured_at' must be an ISO-8601 string, got {type(value).__name__}"
        raise FrameError(msg, reason="bad_field", field_name="captured_at")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        msg = f"frame field 'captured_at' is not ISO-8601: {_shown(value)}"
        raise FrameError(msg, reason="bad_field", field_name="captured_at") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def max_message_bytes(max_image_bytes: int) -> int:
    """The largest message that can carry an image of ``max_image_bytes`` (prefix + header)."""
    return _PREFIX.size + _MAX_HEADER_BYTES + max_image_bytes


def decode(payload: bytes, *, max_image_bytes: int | None = None) -> FrameEnvelope:
    """Parse wire bytes into a validated envelope.

    Args:
        payload: One message value.
        max_image_bytes: When given, a message too large to carry an image of at most this
            many bytes is refused before anything is parsed or hashed.

    Raises:
        FrameError: naming the offending field and a stable reason code.
    """
    if not payload:
        msg = "frame message is empty"
        raise FrameError(msg, reason="empty")
    if max_image_bytes is not None and len(payload) > max_message_bytes(max_image_bytes):
        limit = max_message_bytes(max_image_bytes)
        msg = (f"frame message is {len(payload)} bytes, above the {limit}-byte limit "
               f"(a {max_image_bytes}-byte image plus the envelope header)")
        raise FrameError(msg, reason="oversized", field_name="message")
    if len(payload) < _PREFIX.size or payload[:4] != MAGIC:
        msg = "frame message does not start with the AGPT envelope magic"
        raise FrameError(msg, reason="not_an_envelope")
    _, version, header_len = _PREFIX.unpack_from(payload)
    if version not in SUPPORTED_VERSIONS:
        supported = sorted(SUPPORTED_VERSIONS)
        msg = f"frame schema_version {version} is not supported (supported: {supported})"
        raise FrameError(msg, reason="unknown_schema_version", field_name="schema_version")
    if header_len > _MAX_HEADER_BYTES or _PREFIX.size + header_len > len(payload):
        msg = f"frame header length {header_len} exceeds the message ({len(payload)} bytes)"
        raise FrameError(msg, reason="truncated")
    raw = payload[_PREFIX.size : _PREFIX.size + header_len]
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"frame header is not valid JSON: {exc}"
        raise FrameError(msg, reason="bad_header") from exc
    except ValueError as exc:  # an integer of more than 4300 digits (int_max_str_digits)
        msg = f"frame header holds a number Python will not parse: {str(exc)[:120]}"
        msg = f"frame header is not valid JSON: {exc}"
        raise FrameError(msg, reason="bad_header") from exc
    except RecursionError as exc:  # e.g. "[[[[…" nested thousands deep
        msg = "frame header JSON is nested too deeply"
        raise FrameError(msg, reason="bad_header") from exc
    if not isinstance(header, dict):
        msg = "frame header must be a JSON object"
        raise FrameError(msg, reason="bad_header")
    metadata = header.get("metadata") or {}
    if not isinstance(metadata, dict):
        msg = "frame field 'metadata' must be a JSON object"
        raise FrameError(msg, reason="bad_field", field_name="metadata")
    image = payload[_PREFIX.size + header_len :] or None
    return FrameEnvelope(
        camera_id=_require_str(header, "camera_id"),
        frame_id=_require_str(header, "frame_id"),
        product=_require_str(header, "product"),
        captured_at=_parse_time(header.get("captured_at")),
        image=image,
        image_uri=header.get("image_uri"),
        image_sha256=header.get("image_sha256"),
        metadata=metadata,
        schema_version=version,
    )


def image_format(data: bytes) -> str | None:
    """Return "png"/"jpeg" from the magic bytes, or None."""
    for signature, name in IMAGE_SIGNATURES.items():
        if data.startswith(signature):
            return name
    return None


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def validate(frame: FrameEnvelope) -> None:
    """Check the envelope's own consistency and that the database can store every field.

    The pixels are not checked here (see ``inference.images``); the storable limits are
    :mod:`ingest.envelope_limits`.

    Raises:
        FrameError: naming the offending field and a stable reason code.
    """
    try:
        _validate(frame)
    except LimitViolation as exc:
        raise FrameError(str(exc), reason=exc.reason, field_name=exc.field_name) from exc


def _validate(frame: FrameEnvelope) -> None:
    for name in ("camera_id", "frame_id", "product"):
        value = getattr(frame, name)
        if not isinstance(value, str) or not value.strip():
            msg = f"frame field '{name}' must be a non-empty string"
            raise FrameError(msg, reason="bad_field", field_name=name)
        check_text_field(name, value)
    if not isinstance(frame.captured_at, datetime):
        msg = "frame field 'captured_at' must be a datetime"
        raise FrameError(msg, reason="bad_field", field_name="captured_at")
    check_captured_at(frame.captured_at)
    if frame.schema_version not in SUPPORTED_VERSIONS:
        msg = f"frame schema_version {frame.schema_version} is not supported"
        raise FrameError(msg, reason="unknown_schema_version", field_name="schema_version")
    if frame.image_uri is not None:
        if not isinstance(frame.image_uri, str) or not frame.image_uri.strip():
            msg = (f"frame field 'image_uri' must be a non-empty string, "
                   f"got {type(frame.image_uri).__name__}")
            raise FrameError(msg, reason="bad_field", field_name="image_uri")
        check_text_field("image_uri", frame.image_uri)
    if not isinstance(frame.metadata, dict):
        msg = "frame field 'metadata' must be a JSON object"
        raise FrameError(msg, reason="bad_field", field_name="metadata")
    check_metadata(frame.metadata)
    if frame.image is None and frame.image_uri is None:
        msg = "frame carries neither 'image' bytes nor an 'image_uri'"
        raise FrameError(msg, reason="missing_field", field_name="image")
    if frame.image is not None and frame.image_uri is not None:
        msg = "frame carries both 'image' bytes and an 'image_uri'; send one"
        raise FrameError(msg, reason="bad_field", field_name="image_uri")
    if frame.image_uri is not None and not frame.image_sha256:
        msg = "frame field 'image_sha256' is required with 'image_uri'"
        raise FrameError(msg, reason="missing_field", field_name="image_sha256")
    if frame.image_sha256 is not None:
        digest = frame.image_sha256
        if not isinstance(digest, str):
            msg = "frame field 'image_sha256' must be 64 hex characters"
            raise FrameError(msg, reason="bad_field", field_name="image_sha256")
        check_sha256(digest)
        if frame.image is not None and sha256_hex(frame.image) != digest.lower():
            msg = "frame image bytes do not match 'image_sha256'"
            raise FrameError(msg, reason="checksum_mismatch", field_name="image_sha256")


def _shown(value: str, limit: int = 80) -> str:
    """``value`` quoted for an error message: escaped, UTF-8 encodable, bounded."""
    text = repr(value[:limit]).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(value) <= limit else text + "…"
