import io
from datetime import UTC, datetime

import pytest
from PIL import Image

from inference.images import ImageLimits, decode_image, frame_image_bytes
from ingest.envelope import FrameEnvelope, FrameError, sha256_hex


def encoded(size=(64, 48), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_decodes_png_and_jpeg(fmt):
    image = decode_image(encoded(fmt=fmt), ImageLimits())
    assert image.size == (64, 48)
    assert image.mode == "RGB"


@pytest.mark.parametrize(
    ("data", "limits", "reason"),
    [
        (b"GIF89a....", ImageLimits(), "not_an_image"),
        (encoded()[:60], ImageLimits(), "truncated_image"),
        (encoded(fmt="JPEG")[:200], ImageLimits(), "truncated_image"),
        (encoded((64, 48)), ImageLimits(max_pixels=1000), "too_many_pixels"),
        (encoded((8, 8)), ImageLimits(), "too_small"),
    ],
)
def test_bad_images_are_refused_with_a_reason(data, limits, reason):
    with pytest.raises(FrameError) as info:
        decode_image(data, limits)
    assert info.value.reason == reason


def frame(**kw):
    fields = dict(camera_id="c", frame_id="1", product="p", captured_at=datetime.now(UTC))
    fields.update(kw)
    return FrameEnvelope(**fields)


def test_claim_check_is_read_and_verified(tmp_path):
    data = encoded()
    path = tmp_path / "img.png"
    path.write_bytes(data)
    ok = frame(image_uri=path.as_uri(), image_sha256=sha256_hex(data))
    assert frame_image_bytes(ok, ImageLimits()) == data
    path.write_bytes(encoded((65, 48)))
    with pytest.raises(FrameError) as info:
        frame_image_bytes(ok, ImageLimits())
    assert info.value.reason == "checksum_mismatch"


@pytest.mark.parametrize("uri", ["s3://bucket/key.png", "file:///does/not/exist.png"])
def test_unreadable_uri_is_refused(uri):
    with pytest.raises(FrameError) as info:
        frame_image_bytes(frame(image_uri=uri, image_sha256="a" * 64), ImageLimits())
    assert info.value.reason == "bad_uri"


def test_uri_of_a_directory_is_refused(tmp_path):
    with pytest.raises(FrameError) as info:
        frame_image_bytes(frame(image_uri=tmp_path.as_uri(), image_sha256="a" * 64),
                          ImageLimits())
    assert info.value.reason == "bad_uri"


def test_oversized_image_is_refused():
    with pytest.raises(FrameError) as info:
        frame_image_bytes(frame(image=encoded()), ImageLimits(max_bytes=100))
    assert info.value.reason == "oversized"
