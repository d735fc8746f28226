"""validated_png accepts real PNG/JPEG images and refuses everything else with a reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from review.uploads import UploadLimits, UploadRejectedError, validated_png


def _encode(size: tuple[int, int] = (40, 30), fmt: str = "PNG", mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "RGB"), ("JPEG", "RGB"), ("PNG", "L"),
                                           ("PNG", "RGBA")])
def test_png_and_jpeg_are_reencoded_as_rgb_png(fmt: str, mode: str) -> None:
    out = validated_png(_encode(fmt=fmt, mode=mode))

    image = Image.open(io.BytesIO(out))
    assert image.format == "PNG"
    assert image.mode == "RGB"
    assert image.size == (40, 30)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"GIF89a" + b"\0" * 100, "not a readable"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not a readable"),
        (_encode(fmt="GIF"), "only PNG or JPEG"),
        (_encode(fmt="BMP"), "only PNG or JPEG"),
        (_encode()[:200], "damaged or truncated"),
        (_encode(size=(8, 8)), "each side needs"),
    ],
    ids=["empty", "gif-header-garbage", "svg", "gif", "bmp", "truncated", "tiny"],
)
def test_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(UploadRejectedError, match=reason):
        validated_png(data)


def test_byte_and_pixel_limits() -> None:
    data = _encode(size=(200, 100))

    with pytest.raises(UploadRejectedError, match="byte limit"):
        validated_png(data, UploadLimits(max_bytes=len(data) - 1))
    with pytest.raises(UploadRejectedError, match="pixel limit"):
        validated_png(data, UploadLimits(max_pixels=200 * 100 - 1))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_decompression_bomb_header_is_refused_before_decoding() -> None:
    # A well-formed PNG header claiming 100k × 100k pixels with a tiny body: refused on its
    # size, never decoded.
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + _png_chunk(b"IEND", b""))

    with pytest.raises(UploadRejectedError, match="pixel limit"):
        validated_png(bomb)
