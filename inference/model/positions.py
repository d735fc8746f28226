"""AnomalyGPT's answer wording and 3×3 grid positions from a binary mask."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

GRID_WORDS = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
NO_ANOMALY = "No, there is no anomaly in the image."


def grid_position(row: float, col: float, height: int, width: int) -> str:
    """The 3×3 grid word for a pixel position (row, col) in an image of height×width."""
    r = min(2, int(3 * row / height))
    c = min(2, int(3 * col / width))
    return GRID_WORDS[r][c]


def region_positions(mask: np.ndarray, *, min_area: int = 1) -> list[str]:
    """Grid word of each connected anomalous region's centroid, largest region first.

    Args:
        mask: bool [H, W].
        min_area: Regions smaller than this many pixels are ignored.

    Returns:
        One grid word per region (words repeat when two regions share a cell).
    """
    labels, count = ndimage.label(mask)
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    areas = ndimage.sum_labels(mask, labels, index)
    centroids = ndimage.center_of_mass(mask, labels, index)
    height, width = mask.shape
    regions = sorted(zip(areas, centroids, strict=True), key=lambda item: -item[0])
    return [
        grid_position(row, col, height, width) for area, (row, col) in regions if area >= min_area
    ]


def distinct(words: list[str]) -> list[str]:
    """``words`` without repeats, first occurrence order."""
    return list(dict.fromkeys(words))


def answer_text(anomalous: bool, positions: list[str], regions: int | None = None) -> str:
    """AnomalyGPT's answer sentence for a verdict.

    Args:
        anomalous: The verdict.
        positions: Distinct grid words, largest region first.
        regions: Number of anomalous regions (defaults to ``len(positions)``).
    """
    if not anomalous:
        return NO_ANOMALY
    count = max(regions or 0, len(positions))
    if not positions:
        return "Yes, there is an anomaly in the image."
    if count == 1:
        return f"Yes, there is an anomaly in the image, at the {positions[0]} of the image."
    listed = positions[0] if len(positions) == 1 else (
        ", ".join(positions[:-1]) + f" and {positions[-1]}"
    )
    return f"Yes, there are {count} anomalies in the image, they are at the {listed} of the image."
