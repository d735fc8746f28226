"""Check an uploaded reference image before it can reach a pool: it is untrusted input.

The browser says nothing trustworthy (file name, MIME type); only the bytes count. A file is
accepted when it is a PNG or JPEG by its own header, within the byte and pixel limits, and
decodes completely; it is re-encoded as an RGB PNG so nothing but pixels is kept.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = ("PNG", "JPEG")


class UploadRejectedError(ValueError):
    """The upload is not an acceptable reference image; the message says why, for the user."""


@dataclass(frozen=True)
class UploadLimits:
    """Bounds on an uploaded reference image."""

    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 16


def validated_png(data: bytes, limits: UploadLimits | None = None) -> bytes:
    """Validate an uploaded image and return it re-encoded as an RGB PNG.

    Args:
        data: The uploaded file's bytes.
        limits: Size bounds (defaults: 8 MiB, 40 Mpx, 16 px per side at least).

    Returns:
        PNG bytes of the decoded RGB pixels (metadata, ICC profiles, extra frames dropped).

    Raises:
        UploadRejectedError: empty, too large, not PNG/JPEG, truncated or undecodable,
            or with an implausible pixel size.
    """
    limits = limits or UploadLimits()
    if not data:
        msg = "the file is empty"
        raise UploadRejectedError(msg)
    if len(data) > limits.max_bytes:
        msg = f"the file is {len(data)} bytes, above the {limits.max_bytes}-byte limit"
        raise UploadRejectedError(msg)
    try:
        with warnings.catch_warnings():
            # A decompression bomb is refused by our own pixel check, not PIL's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in ACCEPTED_FORMATS:
                msg = f"only PNG or JPEG images are accepted, not {image.format or 'this file'}"
                raise UploadRejectedError(msg)
            width, height = image.size
            if width * height > limits.max_pixels:
                msg = (f"the image is {width}×{height} pixels, above the "
                       f"{limits.max_pixels}-pixel limit")
                raise UploadRejectedError(msg)
            if min(width, height) < limits.min_side:
                msg = f"the image is {width}×{height} pixels; each side needs {limits.min_side}+"
                raise UploadRejectedError(msg)
            image.load()
            rgb = image.convert("RGB")
    except UploadRejectedError:
        raise
    except Image.DecompressionBombError as exc:
        msg = f"the image claims more pixels than the {limits.max_pixels}-pixel limit"
        raise UploadRejectedError(msg) from exc
    except UnidentifiedImageError as exc:
        msg = "the file is not a readable PNG or JPEG image"
        raise UploadRejectedError(msg) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        msg = f"the image is damaged or truncated ({type(exc).__name__})"
        raise UploadRejectedError(msg) from exc
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    return buffer.getvalue()
