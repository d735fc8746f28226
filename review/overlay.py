"""Draw a defect mask over its frame for the reviewer."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

RED = np.array([255.0, 0.0, 0.0], dtype=np.float32)


def overlay_mask(image_bytes: bytes, mask_png: bytes, alpha: float = 0.45) -> Image.Image:
    """Tint the masked region of an image red.

    The mask is resized (bilinear) to the image, read as a per-pixel weight in [0, 1]
    (255 = defect), and each pixel is blended towards red by ``alpha * weight``; pixels outside
    the mask are returned unchanged.

    Args:
        image_bytes: Encoded frame (PNG/JPEG, any mode).
        mask_png: Encoded mask; any mode, converted to greyscale.
        alpha: Opacity of the red tint where the mask is full, in [0, 1].

    Returns:
        An RGB image the size of the frame.

    Raises:
        ValueError: if ``alpha`` is outside [0, 1].
        PIL.UnidentifiedImageError: if either input is not a decodable image.
    """
    if not 0.0 <= alpha <= 1.0:
        msg = f"alpha must be in [0, 1], got {alpha}"
        raise ValueError(msg)
    image = Image.open(io.BytesIO(image_bytes)).convert("RGB")
    mask = Image.open(io.BytesIO(mask_png)).convert("L")
    if mask.size != image.size:
        mask = mask.resize(image.size, Image.Resampling.BILINEAR)

    pixels = np.asarray(image, dtype=np.float32)  # [H, W, 3]
    weight = alpha * np.asarray(mask, dtype=np.float32)[..., None] / 255.0  # [H, W, 1]
    blended = pixels * (1.0 - weight) + RED * weight
    return Image.fromarray(np.rint(blended).astype(np.uint8))
