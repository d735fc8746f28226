"""Draw what the model saw over a frame: mask tint and outline, anomaly heatmap, the 3×3 grid.

Pure numpy + Pillow (the dashboard never imports torch). Inputs are encoded bytes as stored;
outputs are RGB ``PIL.Image`` objects ready for ``st.image``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

RED = np.array([255.0, 0.0, 0.0], dtype=np.float32)
OUTLINE = (0, 255, 255)  # cyan: visible on the heatmap's reds and on grey textiles
GRID = (255, 255, 255)
HIGHLIGHT = (255, 214, 0)

# The nine grid words of the model's answers, row by row (inference/model/conversation.py).
GRID_WORDS: tuple[tuple[str, str, str], ...] = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)

# Anchor colours of a perceptual blue→green→yellow→red map (turbo-like), from 0 to 1.
_COLORMAP_ANCHORS = np.array(
    [
        [48, 18, 59],
        [70, 134, 251],
        [27, 229, 181],
        [164, 252, 59],
        [251, 185, 56],
        [228, 70, 13],
        [122, 4, 3],
    ],
    dtype=np.float32,
)


def decode(data: bytes) -> Image.Image:
    """Decode stored image bytes (any mode) into RGB.

    Raises:
        PIL.UnidentifiedImageError: if ``data`` is not a decodable image.
    """
    return Image.open(io.BytesIO(data)).convert("RGB")


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
    _check_unit("alpha", alpha)
    image = decode(image_bytes)
    weight = alpha * _mask_weight(mask_png, image.size)[..., None]  # [H, W, 1]
    pixels = np.asarray(image, dtype=np.float32)  # [H, W, 3]
    blended = pixels * (1.0 - weight) + RED * weight
    return Image.fromarray(np.rint(blended).astype(np.uint8))


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB with a blue→red perceptual map.

    Args:
        values: Any shape, clipped to [0, 1].

    Returns:
        ``values.shape + (3,)`` float32 RGB in [0, 255].
    """
    scaled = np.clip(values, 0.0, 1.0) * (len(_COLORMAP_ANCHORS) - 1)
    low = np.floor(scaled).astype(np.int64)
    high = np.minimum(low + 1, len(_COLORMAP_ANCHORS) - 1)
    frac = (scaled - low)[..., None]
    return _COLORMAP_ANCHORS[low] * (1.0 - frac) + _COLORMAP_ANCHORS[high] * frac


def overlay_heatmap(image: Image.Image, heatmap_png: bytes, opacity: float) -> Image.Image:
    """Blend an 8-bit anomaly map, colour-mapped, over a frame.

    The stored map is at map resolution (e.g. 32×32 patches); it is resized bilinearly to the
    frame. Its 0..255 codes span the verdict's stored value range, so the colours are relative
    to this frame's own map (the legend gives the range in score units).

    Args:
        image: RGB frame.
        heatmap_png: 8-bit greyscale PNG of the map.
        opacity: Weight of the colour map, in [0, 1].

    Returns:
        A new RGB image the size of ``image``.

    Raises:
        ValueError: if ``opacity`` is outside [0, 1].
        PIL.UnidentifiedImageError: if the map is not a decodable image.
    """
    _check_unit("opacity", opacity)
    codes = Image.open(io.BytesIO(heatmap_png)).convert("L")
    if codes.size != image.size:
        codes = codes.resize(image.size, Image.Resampling.BILINEAR)
    colours = colormap(np.asarray(codes, dtype=np.float32) / 255.0)  # [H, W, 3]
    pixels = np.asarray(image, dtype=np.float32)
    blended = pixels * (1.0 - opacity) + colours * opacity
    return Image.fromarray(np.rint(blended).astype(np.uint8))


def mask_outline(mask_png: bytes, size: tuple[int, int], width: int = 2) -> np.ndarray:
    """The boundary pixels of a defect mask, at the frame's size.

    Args:
        mask_png: Encoded mask (255 = defect), any resolution.
        size: Frame size ``(width, height)``.
        width: Outline thickness in pixels (inside the region).

    Returns:
        Boolean ``[H, W]`` array, True on the outline.
    """
    inside = _mask_weight(mask_png, size) >= 0.5  # [H, W]
    eroded = inside.copy()
    for _ in range(max(1, width)):
        # 4-neighbour erosion; the frame border counts as outside.
        padded = np.pad(eroded, 1, constant_values=False)
        eroded = (
            padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
            & padded[1:-1, :-2] & padded[1:-1, 2:]
        )
    return inside & ~eroded


def draw_outline(image: Image.Image, mask_png: bytes, width: int = 2) -> Image.Image:
    """Return ``image`` with the mask's contour drawn in cyan (a new image)."""
    pixels = np.array(image, dtype=np.uint8)
    pixels[mask_outline(mask_png, image.size, width)] = OUTLINE
    return Image.fromarray(pixels)


def draw_grid(image: Image.Image, positions: list[str] | tuple[str, ...] = ()) -> Image.Image:
    """Draw the 3×3 grid the model's position words refer to; named cells are framed in yellow.

    Args:
        image: RGB frame.
        positions: Grid words from the verdict (e.g. ``["top left"]``); unknown words ignored.

    Returns:
        A new RGB image.
    """
    out = image.copy()
    draw = ImageDraw.Draw(out)
    width, height = out.size
    xs = [round(width * i / 3) for i in range(4)]
    ys = [round(height * i / 3) for i in range(4)]
    for x in xs[1:3]:
        draw.line([(x, 0), (x, height)], fill=GRID, width=1)
    for y in ys[1:3]:
        draw.line([(0, y), (width, y)], fill=GRID, width=1)
    wanted = set(positions)
    for row, words in enumerate(GRID_WORDS):
        for column, word in enumerate(words):
            if word in wanted:
                box = (xs[column] + 1, ys[row] + 1, xs[column + 1] - 2, ys[row + 1] - 2)
                draw.rectangle(box, outline=HIGHLIGHT, width=3)
    return out


def compose_frame(
    image_bytes: bytes,
    *,
    heatmap_png: bytes | None = None,
    opacity: float = 0.5,
    mask_png: bytes | None = None,
    grid: bool = True,
    positions: list[str] | tuple[str, ...] = (),
) -> Image.Image:
    """The Frame page's picture: heatmap under the mask contour under the grid.

    Args:
        image_bytes: Encoded frame.
        heatmap_png: 8-bit anomaly map, or None (then no colours).
        opacity: Heatmap opacity in [0, 1].
        mask_png: Defect mask, or None (then no contour).
        grid: Draw the 3×3 grid.
        positions: Grid words to highlight.

    Returns:
        RGB image the size of the frame.

    Raises:
        ValueError: if ``opacity`` is outside [0, 1].
        PIL.UnidentifiedImageError: if a blob is not a decodable image.
    """
    _check_unit("opacity", opacity)
    image = decode(image_bytes)
    if heatmap_png is not None and opacity > 0.0:
        image = overlay_heatmap(image, heatmap_png, opacity)
    if mask_png is not None:
        image = draw_outline(image, mask_png, width=max(2, round(min(image.size) / 150)))
    if grid:
        image = draw_grid(image, positions)
    return image


def thumbnail(image_bytes: bytes, mask_png: bytes | None, edge: int = 160) -> Image.Image:
    """A small preview of a frame with its mask outline, for the queue.

    The outline is drawn at thumbnail size so it stays visible after downscaling.

    Args:
        image_bytes: Encoded frame.
        mask_png: Defect mask, or None.
        edge: Longest side in pixels.

    Returns:
        RGB image whose longest side is at most ``edge``.
    """
    image = decode(image_bytes)
    image.thumbnail((edge, edge), Image.Resampling.BILINEAR)
    if mask_png is not None:
        image = draw_outline(image, mask_png, width=2)
    return image


def _mask_weight(mask_png: bytes, size: tuple[int, int]) -> np.ndarray:
    mask = Image.open(io.BytesIO(mask_png)).convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(mask, dtype=np.float32) / 255.0  # [H, W]


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        msg = f"{name} must be in [0, 1], got {value}"
        raise ValueError(msg)
