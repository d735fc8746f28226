"""The envelope's limits are the database's: derived from the ORM columns, checked at decode."""

import json
import struct
from datetime import UTC, datetime

import pytest
from sqlalchemy import String, Text

from ingest.envelope import MAGIC, FrameError, decode
from ingest.envelope_limits import TEXT_FIELD_MAX_CHARS
from storage.models import Frame

# Envelope field -> frames column it is stored in.
STORED_IN = {"camera_id": "camera_id", "frame_id": "frame_id", "product": "product",
             "image_uri": "image_uri"}


def raw(header: dict, image: bytes = b"\x89PNG\r\n\x1a\nrest") -> bytes:
    body = json.dumps(header).encode()
    return struct.pack(">4sBI", MAGIC, 1, len(body)) + body + image


def header(**fields) -> dict:
    base = {"camera_id": "cam-1", "frame_id": "f-1", "product": "textile",
            "captured_at": "2026-01-01T00:00:00+00:00"}
    base.update(fields)
    return base


def test_text_limits_are_the_column_lengths():
    columns = Frame.__table__.c
    for field, column in STORED_IN.items():
        kind = columns[column].type
        if isinstance(kind, String) and not isinstance(kind, Text) and kind.length:
            assert TEXT_FIELD_MAX_CHARS[field] == kind.length, field
        else:  # unbounded TEXT: the envelope bound is ours, the column takes any length
            assert isinstance(kind, Text), field
    # image_sha256 must be exactly 64 hex characters (check_sha256): the column holds that.
    assert columns["image_sha256"].type.length == 64
    # Every string column of frames that an envelope fills has a limit here.
    envelope_filled = {"camera_id", "frame_id", "product", "image_uri", "image_sha256"}
    string_columns = {c.name for c in columns if isinstance(c.type, String)}
    assert string_columns == envelope_filled


@pytest.mark.parametrize("field", ["camera_id", "frame_id", "product"])
def test_a_value_one_past_the_column_is_refused_and_the_column_length_passes(field):
    limit = TEXT_FIELD_MAX_CHARS[field]
    with pytest.raises(FrameError) as info:
        decode(raw(header(**{field: "x" * (limit + 1)})))
    assert (info.value.reason, info.value.field_name) == ("too_long", field)
    assert decode(raw(header(**{field: "é" * limit}))).__getattribute__(field) == "é" * limit


@pytest.mark.parametrize(
    ("fields", "reason", "field"),
    [
        ({"camera_id": "cam\x00-1"}, "bad_text", "camera_id"),
        ({"product": "text\x00ile"}, "bad_text", "product"),
        ({"camera_id": "cam-\udc80"}, "bad_text", "camera_id"),
        ({"frame_id": "\ud800"}, "bad_text", "frame_id"),
        ({"camera_id": "c" * 200}, "too_long", "camera_id"),
        ({"metadata": {"line": float("nan")}}, "non_finite", "metadata"),
        ({"metadata": {"deep": [1, {"x": float("inf")}]}}, "non_finite", "metadata"),
        ({"metadata": {"lot": "a\x00b"}}, "bad_text", "metadata"),
        ({"metadata": {"a\x00": 1}}, "bad_text", "metadata"),
        ({"metadata": {"lot": "\udc80"}}, "bad_text", "metadata"),
        ({"metadata": {"x": json.loads("[" * 20 + "1" + "]" * 20)}}, "bad_field", "metadata"),
        ({"captured_at": "0001-01-01T00:00:00+05:00"}, "out_of_range", "captured_at"),
        ({"captured_at": "9999-12-31T23:59:59-05:00"}, "out_of_range", "captured_at"),
        ({"image_uri": "file:///x\x00.png", "image_sha256": "a" * 64}, "bad_text", "image_uri"),
        ({"image_uri": "file:///" + "a" * 5000, "image_sha256": "a" * 64}, "too_long",
         "image_uri"),
        ({"image_uri": "file:///x.png", "image_sha256": "z" * 64}, "bad_field", "image_sha256"),
    ],
)
def test_what_the_database_cannot_store_is_refused_with_a_reason(fields, reason, field):
    image = b"" if "image_uri" in fields else b"\x89PNG\r\n\x1a\nrest"
    with pytest.raises(FrameError) as info:
        decode(raw(header(**fields), image))
    assert (info.value.reason, info.value.field_name) == (reason, field)
    message = str(info.value)
    message.encode("utf-8")  # a dead-letter header must be able to carry it
    assert "\x00" not in message
    assert len(message) < 400


def test_python_json_extensions_are_refused():
    body = (b'{"camera_id":"c","frame_id":"f","product":"p",'
            b'"captured_at":"2026-01-01T00:00:00","metadata":{"v":NaN,"w":-Infinity}}')
    with pytest.raises(FrameError) as info:
        decode(struct.pack(">4sBI", MAGIC, 1, len(body)) + body + b"\x89PNG\r\n\x1a\n")
    assert info.value.reason == "non_finite"
    big = b'{"camera_id":"c","frame_id":"f","product":"p","captured_at":"2026-01-01",' \
          b'"metadata":{"v":1e999}}'
    with pytest.raises(FrameError) as info:
        decode(struct.pack(">4sBI", MAGIC, 1, len(big)) + big + b"\x89PNG\r\n\x1a\n")
    assert info.value.reason == "non_finite"
    huge = b'{"camera_id":"c","frame_id":"f","product":"p","captured_at":"2026-01-01",' \
           b'"metadata":{"v":' + b"9" * 5000 + b"}}"
    with pytest.raises(FrameError) as info:
        decode(struct.pack(">4sBI", MAGIC, 1, len(huge)) + huge + b"\x89PNG\r\n\x1a\n")
    assert info.value.reason == "bad_header"


def test_calendar_ends_in_utc_are_accepted():
    for text in ("0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59.999999+00:00",
                 "0001-01-01T05:00:00+05:00"):
        frame = decode(raw(header(captured_at=text)))
        assert frame.captured_at == datetime.fromisoformat(text)
        assert frame.captured_at.astimezone(UTC).year in (1, 9999)
