"""overlay_mask tints masked pixels red and leaves the others alone."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from review.overlay import overlay_mask


def _encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 200, size=(32, 48, 3), dtype=np.uint8)  # [H, W, 3]


def test_masked_pixels_turn_redder_others_unchanged() -> None:
    frame = _frame()
    mask = np.zeros((32, 48), dtype=np.uint8)
    mask[8:24, 12:36] = 255

    out = np.asarray(overlay_mask(_encode(frame), _encode(mask), alpha=0.45)).astype(int)

    inside, outside = mask == 255, mask == 0
    redness = out[..., 0] - out[..., 1:].mean(axis=-1)
    before = frame[..., 0].astype(int) - frame[..., 1:].astype(int).mean(axis=-1)
    assert np.all(redness[inside] > before[inside])
    np.testing.assert_array_equal(out[outside], frame[outside])
    expected = np.rint(frame[inside] * 0.55 + np.array([255, 0, 0]) * 0.45)
    np.testing.assert_allclose(out[inside], expected, atol=1)


def test_mask_is_resized_to_the_image() -> None:
    frame = _frame()
    small = np.zeros((4, 6), dtype=np.uint8)
    small[:, :3] = 255  # left half

    out = overlay_mask(_encode(frame), _encode(small))

    assert out.size == (48, 32)
    assert out.mode == "RGB"
    pixels = np.asarray(out).astype(int)
    assert np.all(pixels[:, :20, 0] >= frame[:, :20, 0])
    np.testing.assert_array_equal(pixels[:, 28:], frame[:, 28:])


def test_alpha_zero_changes_nothing_and_jpeg_greyscale_inputs_work() -> None:
    grey = np.full((16, 16), 90, dtype=np.uint8)
    mask = np.full((16, 16), 255, dtype=np.uint8)

    out = overlay_mask(_encode(grey, "JPEG"), _encode(mask), alpha=0.0)

    assert np.all(np.abs(np.asarray(out).astype(int) - 90) <= 2)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_out_of_range(alpha: float) -> None:
    frame = _encode(_frame())

    with pytest.raises(ValueError, match="alpha must be in"):
        overlay_mask(frame, frame, alpha=alpha)
