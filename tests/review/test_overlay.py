"""overlay_mask tints masked pixels red and leaves the others alone."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from review.overlay import (
    GRID,
    HIGHLIGHT,
    OUTLINE,
    colormap,
    compose_frame,
    draw_grid,
    draw_outline,
    mask_outline,
    overlay_mask,
    thumbnail,
)


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


def test_heatmap_colours_follow_the_map_and_opacity() -> None:
    frame = np.full((30, 30, 3), 128, dtype=np.uint8)
    codes = np.zeros((3, 3), dtype=np.uint8)
    codes[0, 0] = 255  # hot top-left patch

    plain = np.asarray(compose_frame(_encode(frame), heatmap_png=_encode(codes), opacity=0.0,
                                     grid=False))
    hot = np.asarray(compose_frame(_encode(frame), heatmap_png=_encode(codes), opacity=1.0,
                                   grid=False)).astype(int)

    np.testing.assert_array_equal(plain, frame)
    np.testing.assert_allclose(hot[2, 2], colormap(np.array(1.0)), atol=1)  # red end
    np.testing.assert_allclose(hot[27, 27], colormap(np.array(0.0)), atol=1)  # blue end
    assert hot[2, 2, 0] > hot[2, 2, 2]
    assert hot[27, 27, 2] > hot[27, 27, 0]


def test_outline_is_the_boundary_of_the_mask_only() -> None:
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[5:15, 5:15] = 255

    outline = mask_outline(_encode(mask), (20, 20), width=1)

    assert outline[5, 5:15].all()
    assert outline[14, 5:15].all()
    assert outline[5:15, 5].all()
    assert not outline[6:14, 6:14].any()  # interior
    assert not outline[:5].any()
    assert not outline[:, :5].any()
    drawn = np.asarray(draw_outline(Image.fromarray(np.zeros((20, 20, 3), np.uint8)),
                                    _encode(mask), width=1))
    assert tuple(drawn[5, 10]) == OUTLINE
    assert tuple(drawn[10, 10]) == (0, 0, 0)


def test_grid_frames_the_named_cells() -> None:
    image = Image.fromarray(np.zeros((90, 90, 3), dtype=np.uint8))

    out = np.asarray(draw_grid(image, ["top left", "bottom right"]))

    assert tuple(out[45, 30]) == GRID  # vertical line at one third
    assert tuple(out[1, 15]) == HIGHLIGHT  # top-left cell framed
    assert tuple(out[61, 75]) == HIGHLIGHT  # bottom-right cell framed
    assert tuple(out[31, 45]) != HIGHLIGHT  # center not named


def test_thumbnail_is_small_and_outlined() -> None:
    frame = np.zeros((300, 200, 3), dtype=np.uint8)
    mask = np.zeros((300, 200), dtype=np.uint8)
    mask[100:200, 50:150] = 255

    thumb = thumbnail(_encode(frame), _encode(mask), edge=60)

    assert max(thumb.size) == 60
    assert (np.asarray(thumb) == OUTLINE).all(axis=-1).any()
