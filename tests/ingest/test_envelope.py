import io
import json
import struct
from datetime import UTC, datetime

import pytest
from PIL import Image

from ingest.envelope import MAGIC, FrameEnvelope, FrameError, decode, sha256_hex


def png_bytes(size=(32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_frame(**overrides) -> FrameEnvelope:
    fields = dict(camera_id="cam-1", frame_id="f-1", product="textile",
                  captured_at=datetime(2026, 11, 30, 12, 0, tzinfo=UTC), image=png_bytes(),
                  metadata={"line": 3})
    fields.update(overrides)
    return FrameEnvelope(**fields)


def raw_message(header: dict, image: bytes = b"", version: int = 1) -> bytes:
    body = json.dumps(header).encode()
    return struct.pack(">4sBI", MAGIC, version, len(body)) + body + image


def test_round_trip_keeps_every_field():
    frame = make_frame()
    decoded = decode(frame.encode())
    assert decoded == frame
    assert decoded.key == b"cam-1"


def test_claim_check_round_trip():
    data = png_bytes()
    frame = make_frame(image=None, image_uri="file:///tmp/x.png", image_sha256=sha256_hex(data))
    assert decode(frame.encode()) == frame


@pytest.mark.parametrize(
    ("payload", "reason", "field"),
    [
        (b"", "empty", None),
        (b"\x89PNG\r\n\x1a\n rest", "not_an_envelope", None),
        (raw_message({"frame_id": "1", "product": "p", "captured_at": "2026-01-01T00:00:00"},
                     b"x"), "missing_field", "camera_id"),
        (raw_message({"camera_id": 7, "frame_id": "1", "product": "p",
                      "captured_at": "2026-01-01T00:00:00"}, b"x"), "bad_field", "camera_id"),
        (raw_message({"camera_id": "c", "frame_id": "1", "product": "p",
                      "captured_at": "yesterday"}, b"x"), "bad_field", "captured_at"),
        (raw_message({"camera_id": "c", "frame_id": "1", "product": "p",
                      "captured_at": "2026-01-01T00:00:00"}, b"x", version=9),
         "unknown_schema_version", "schema_version"),
        (raw_message({"camera_id": "c", "frame_id": "1", "product": "p",
                      "captured_at": "2026-01-01T00:00:00"}), "missing_field", "image"),
        (raw_message({"camera_id": "c", "frame_id": "1", "product": "p",
                      "captured_at": "2026-01-01T00:00:00", "image_sha256": "0" * 64},
                     b"abc"), "checksum_mismatch", "image_sha256"),
        (struct.pack(">4sBI", MAGIC, 1, 5000) + b"{}", "truncated", None),
        (struct.pack(">4sBI", MAGIC, 1, 3) + b"{x}", "bad_header", None),
        (struct.pack(">4sBI", MAGIC, 1, 50_000) + b"[" * 50_000, "bad_header", None),
        (raw_message({"camera_id": "c", "frame_id": "1", "product": "p",
                      "captured_at": "2026-01-01T00:00:00", "image_uri": 12,
                      "image_sha256": "0" * 64}), "bad_field", "image_uri"),
    ],
)
def test_malformed_messages_name_the_problem(payload, reason, field):
    with pytest.raises(FrameError) as info:
        decode(payload)
    assert info.value.reason == reason
    assert info.value.field_name == field
    if field:
        assert field in str(info.value)


def test_naive_capture_time_is_taken_as_utc():
    message = raw_message({"camera_id": "c", "frame_id": "1", "product": "p",
                           "captured_at": "2026-01-01T00:00:00"}, png_bytes())
    assert decode(message).captured_at.tzinfo is not None


def test_a_message_too_large_for_its_image_limit_is_refused_before_parsing():
    image = png_bytes()
    message = make_frame(image=image).encode()
    assert decode(message, max_image_bytes=len(image)) == make_frame(image=image)

    with pytest.raises(FrameError) as info:
        decode(message + b"\0" * (64 * 1024), max_image_bytes=len(image))
    assert (info.value.reason, info.value.field_name) == ("oversized", "message")
    assert "bytes, above the" in str(info.value)
