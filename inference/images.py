"""Frame image bytes → a verified, decoded PIL image, or a FrameError saying why not."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from ingest.blobstore import (
    BlobNotFoundError,
    BlobSchemeError,
    BlobStore,
    BlobTooLargeError,
    BlobUnavailableError,
    BlobUriError,
)
from ingest.envelope import FrameEnvelope, FrameError, image_format, sha256_hex


@dataclass(frozen=True)
class ImageLimits:
    """Bounds that protect workers from hostile or broken frames."""

    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 16


def read_from_store(store: BlobStore, uri: str, *, max_bytes: int) -> bytes:
    """Fetch a claim check through the worker's blob store (its jail).

    Raises:
        FrameError: the URI is not in the store, names nothing, or is too large.
        BlobUnavailableError: the store is down; not the frame's fault (retry, never DLQ).
    """
    try:
        return store.read(uri, max_bytes=max_bytes)
    except BlobUnavailableError:
        raise
    except BlobTooLargeError as exc:
        msg = f"image at 'image_uri' is above the {max_bytes}-byte limit"
        raise FrameError(msg, reason="oversized", field_name="image_uri") from exc
    except BlobSchemeError as exc:
        msg = f"frame 'image_uri' is not a URI of this worker's blob store: {exc}"
        raise FrameError(msg, reason="bad_uri", field_name="image_uri") from exc
    except (BlobUriError, BlobNotFoundError) as exc:
        # One code whether or not something exists there: no existence oracle.
        msg = f"frame 'image_uri' does not name a blob in the store: {exc}"
        raise FrameError(msg, reason="not_in_store", field_name="image_uri") from exc


def frame_image_bytes(frame: FrameEnvelope, limits: ImageLimits,
                      store: BlobStore | None = None) -> bytes:
    """The encoded image of a frame, fetched and checksum-verified when it is a claim check.

    Claim checks are read through ``store`` only (any scheme it serves, only inside it);
    without a store every ``image_uri`` is refused (``not_in_store``) and nothing is opened.

    Raises:
        FrameError: ``not_in_store``, ``bad_uri``, ``oversized`` or ``checksum_mismatch``.
        BlobUnavailableError: the store is down or a read timed out (retry, never DLQ).
    """
    if frame.image is not None:
        data = frame.image
    else:
        assert frame.image_uri is not None  # guaranteed by envelope validation
        if store is None:
            msg = ("frame carries an 'image_uri' but this worker has no blob store "
                   "(set AGPT_BLOB_STORE)")
            raise FrameError(msg, reason="not_in_store", field_name="image_uri")
        data = read_from_store(store, frame.image_uri, max_bytes=limits.max_bytes)
        if frame.image_sha256 and sha256_hex(data) != frame.image_sha256.lower():
            msg = "image at 'image_uri' does not match 'image_sha256'"
            raise FrameError(msg, reason="checksum_mismatch", field_name="image_sha256")
    if len(data) > limits.max_bytes:
        msg = f"image is {len(data)} bytes, above the {limits.max_bytes}-byte limit"
        raise FrameError(msg, reason="oversized", field_name="image")
    return data


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Decode PNG/JPEG bytes fully, refusing anything else or anything too large.

    Raises:
        FrameError: with reason ``not_an_image``, ``too_many_pixels``, ``too_small`` or
            ``truncated_image``.
    """
    kind = image_format(data)
    if kind is None:
        msg = "frame 'image' is not a PNG or JPEG (unknown signature)"
        raise FrameError(msg, reason="not_an_image", field_name="image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                msg = (f"frame image is {width}x{height} = {width * height} pixels, "
                       f"above the {limits.max_pixels}-pixel limit")
                raise FrameError(msg, reason="too_many_pixels", field_name="image")
            image.load()  # decode now: truncated data fails here, not in the model
    except FrameError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        msg = f"frame image is a decompression bomb: {exc}"
        raise FrameError(msg, reason="too_many_pixels", field_name="image") from exc
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        msg = f"frame {kind.upper()} image cannot be decoded ({exc})"
        raise FrameError(msg, reason="truncated_image", field_name="image") from exc
    if min(width, height) < limits.min_side:
        msg = f"frame image is {width}x{height}, below the {limits.min_side}-pixel minimum side"
        raise FrameError(msg, reason="too_small", field_name="image")
    return image.convert("RGB")
