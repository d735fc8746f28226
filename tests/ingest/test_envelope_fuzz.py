"""Fuzzing the decoder: a FrameError with a reason, or a frame the database can store."""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from datetime import UTC

import pytest
from hypothesis import HealthCheck, given, settings
from PIL import Image

from ingest.envelope import FrameError, decode
from ingest.envelope_limits import TEXT_FIELD_MAX_CHARS, unstorable_text
from tests.ingest.hostile_messages import hostile_messages, make_places

EXAMPLES = int(os.environ.get("AGPT_FUZZ_EXAMPLES", "400"))


def _good_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


GOOD = _good_png()


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    return make_places(tmp_path_factory.mktemp("fuzz-decoder"), GOOD)


def test_decode_refuses_with_a_reason_or_returns_a_storable_frame(places):
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(message=hostile_messages(places, GOOD))
    def check(message):
        kinds[message.kind] += 1
        try:
            frame = decode(message.value, max_image_bytes=1024 * 1024)
        except FrameError as error:
            refused = error
        else:
            refused = None
        if refused is not None:
            reasons[refused.reason] += 1
            text = str(refused)
            text.encode("utf-8")  # a dead-letter header can carry it
            assert "\x00" not in text
            assert len(text) < 1000
            return
        reasons["(accepted)"] += 1
        for name in ("camera_id", "frame_id", "product"):
            value = getattr(frame, name)
            assert len(value) <= TEXT_FIELD_MAX_CHARS[name]
            assert unstorable_text(value) is None
        assert frame.image_uri is None or unstorable_text(frame.image_uri) is None
        json.dumps(frame.metadata, allow_nan=False).encode("utf-8")
        assert "\\u0000" not in json.dumps(frame.metadata)
        frame.captured_at.astimezone(UTC)
        assert frame.key == frame.camera_id.encode()

    check()
    report = (f"\ndecoder fuzz: {sum(kinds.values())} messages, kinds {dict(kinds)}, "
              f"outcomes {dict(reasons)}")
    print(report)  # noqa: T201 - the fuzz counts, shown with -s
    assert reasons["(accepted)"] > 0
    assert len(reasons) > 8
