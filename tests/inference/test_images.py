import io
from datetime import UTC, datetime

import pytest
from PIL import Image

from inference.images import ImageLimits, decode_image, frame_image_bytes
from ingest.blobstore import LocalBlobStore
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


def test_claim_check_is_read_from_the_store_and_verified(tmp_path):
    data = encoded()
    store = LocalBlobStore(tmp_path)
    path = tmp_path / "img.png"
    path.write_bytes(data)
    ok = frame(image_uri=path.as_uri(), image_sha256=sha256_hex(data))
    assert frame_image_bytes(ok, ImageLimits(), store) == data
    path.write_bytes(encoded((65, 48)))
    with pytest.raises(FrameError) as info:
        frame_image_bytes(ok, ImageLimits(), store)
    assert info.value.reason == "checksum_mismatch"


def test_without_a_store_no_claim_check_is_opened(tmp_path):
    data = encoded()
    path = tmp_path / "img.png"
    path.write_bytes(data)
    with pytest.raises(FrameError) as info:
        frame_image_bytes(frame(image_uri=path.as_uri(), image_sha256=sha256_hex(data)),
                          ImageLimits())
    assert (info.value.reason, info.value.field_name) == ("not_in_store", "image_uri")


@pytest.mark.parametrize(("uri", "reason"), [("s3://bucket/key.png", "bad_uri"),
                                             ("file:///does/not/exist.png", "not_in_store")])
def test_a_uri_outside_the_store_is_refused(tmp_path, uri, reason):
    with pytest.raises(FrameError) as info:
        frame_image_bytes(frame(image_uri=uri, image_sha256="a" * 64), ImageLimits(),
                          LocalBlobStore(tmp_path))
    assert info.value.reason == reason


def test_uri_of_a_directory_is_refused(tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(FrameError) as info:
        frame_image_bytes(frame(image_uri=(tmp_path / "sub").as_uri(), image_sha256="a" * 64),
                          ImageLimits(), LocalBlobStore(tmp_path))
    assert info.value.reason == "not_in_store"


def test_oversized_image_is_refused():
    with pytest.raises(FrameError) as info:
        frame_image_bytes(frame(image=encoded()), ImageLimits(max_bytes=100))
    assert info.value.reason == "oversized"
