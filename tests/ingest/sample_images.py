"""Small real PNG images for the ingest tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_bytes(shade: int, size: tuple[int, int] = (32, 32)) -> bytes:
    """A PNG of one grey ``shade`` (distinct shades give distinct bytes)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (shade, shade, shade)).save(buffer, format="PNG")
    return buffer.getvalue()


def noisy_png(size: int, seed: int = 0) -> bytes:
    """A PNG of random pixels: incompressible, about ``3 * size**2`` bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
