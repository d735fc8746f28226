"""Simulated anomalies on normal images, each with its exact mask and AnomalyGPT's answer.

Four kinds, as in AnomalyGPT's stage 2 and the methods it builds on:

* ``nsa``: NSA (Schlüter et al., 2022), as the spec describes: a patch of random size, aspect
  and rotation cut from another normal image of the same product, Poisson-blended into this
  one (OpenCV ``seamlessClone``). Blending fades the patch into its surroundings, so the mask
  is where the blend changed the image: ``|blended − original|`` (mean over channels) divided
  by its maximum, above 0.3, inside the pasted region.
* ``cutpaste``: CutPaste (Li et al., 2021): the same patch pasted as it is; the mask is every
  pixel of the pasted region that changed by more than 8 grey levels.
* ``scar``: CutPaste-scar: a thin rotated stroke of a random colour or of donor pixels; the
  mask is the stroke.
* ``texture``: DRAEM (Zavrtanik et al., 2021): a foreign texture (another product) shown
  through a thresholded Perlin-noise mask with opacity ``1 − β``; the mask is the noise mask.

Everything is a pure function of the images and a ``numpy.random.Generator``: the same seed
gives the same sample, byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from inference.model.positions import answer_text, distinct, grid_position, region_positions

__all__ = ["KINDS", "Simulated", "answer_for_mask", "perlin_noise", "simulate"]

KINDS = ("nsa", "cutpaste", "scar", "texture")
NSA_MASK_LEVEL = 0.3  # normalised |blended − original| that counts as anomalous (spec)
MIN_AREA = 24  # pixels: smaller regions are not named in the answer, nor accepted as a sample
_MIN_CHANGE = 12.0  # grey levels: a patch whose strongest change is below this is invisible
_VISIBLE = 8.0  # grey levels: a pasted pixel that changed less is not part of the defect
_ATTEMPTS = 20


class SimulationError(RuntimeError):
    """No visible anomaly could be drawn (e.g. a flat image and an identical donor)."""


@dataclass(frozen=True)
class Simulated:
    """One simulated anomaly.

    Attributes:
        image: uint8 [H, W, 3], the normal image with the anomaly.
        mask: bool [H, W], exactly the anomalous pixels.
        region: bool [H, W], where the anomaly was placed (the mask lies inside it).
        kind: One of `KINDS`.
    """

    image: np.ndarray
    mask: np.ndarray
    region: np.ndarray
    kind: str

    @property
    def answer(self) -> str:
        """AnomalyGPT's answer for this image (one anomaly per placed region)."""
        return answer_for_mask(self.mask, self.region)


def answer_for_mask(mask: np.ndarray, region: np.ndarray | None = None) -> str:
    """AnomalyGPT's answer for a mask.

    "No ..." when empty, else "Yes ..." with the 3×3 positions of its regions (largest first;
    the two-region wording for two or more).

    Args:
        mask: bool [H, W] anomalous pixels.
        region: bool [H, W] placed anomalies; when given, each connected placed anomaly counts
            once (a blended patch whose changed pixels fall apart is still one anomaly), at
            the centroid of its mask pixels.
    """
    if not mask.any():
        return answer_text(False, [])
    if region is None:
        words = region_positions(mask, min_area=MIN_AREA)
    else:
        labels, count = ndimage.label(region)
        height, width = mask.shape
        found = []
        for label in range(1, count + 1):
            inside = mask & (labels == label)
            area = int(inside.sum())
            if area >= MIN_AREA:
                row, col = ndimage.center_of_mass(inside)
                found.append((area, grid_position(row, col, height, width)))
        words = [word for _, word in sorted(found, key=lambda item: -item[0])]
    return answer_text(True, distinct(words), regions=len(words))


def _patch_geometry(size: int, rng: np.random.Generator) -> tuple[int, int, float]:
    """(width, height, angle in degrees) of a patch: 8-35 % of the side, aspect 0.3-3.3."""
    area = rng.uniform(0.008, 0.06) * size * size
    aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
    width = int(np.clip(math.sqrt(area * aspect), 6, 0.45 * size))
    height = int(np.clip(math.sqrt(area / aspect), 6, 0.45 * size))
    return width, height, float(rng.uniform(0, 360))


def _rotated_patch(donor: np.ndarray, width: int, height: int, angle: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A patch of the donor rotated by `angle`: (pixels [h, w, 3], mask [h, w] uint8 255)."""
    diagonal = int(math.ceil(math.hypot(width, height))) + 2
    size = donor.shape[0]
    cy = int(rng.integers(diagonal // 2, size - diagonal // 2))
    cx = int(rng.integers(diagonal // 2, donor.shape[1] - diagonal // 2))
    matrix = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, 1.0)
    # Shift so that the rotated patch's centre lands at the centre of a diagonal×diagonal tile.
    matrix[:, 2] += (diagonal / 2 - cx, diagonal / 2 - cy)
    tile = cv2.warpAffine(donor, matrix, (diagonal, diagonal), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)
    shape = np.zeros((diagonal, diagonal), np.uint8)
    box = cv2.boxPoints(((diagonal / 2, diagonal / 2), (width, height), angle))
    cv2.fillPoly(shape, [np.round(box).astype(np.int32)], 255)
    return tile, shape


def _place(image: np.ndarray, tile: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner for the tile, one pixel away from every border (seamlessClone)."""
    h, w = image.shape[:2]
    side = tile.shape[0]
    return int(rng.integers(1, h - side - 1)), int(rng.integers(1, w - side - 1))


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pixel mean absolute difference over channels, float32 grey levels."""
    return np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=2)


def _nsa(image: np.ndarray, donor: np.ndarray, rng: np.random.Generator,
         *, blend: bool) -> Simulated | None:
    width, height, angle = _patch_geometry(image.shape[0], rng)
    tile, shape = _rotated_patch(donor, width, height, angle, rng)
    top, left = _place(image, tile, rng)
    side = tile.shape[0]
    region = np.zeros(image.shape[:2], bool)
    region[top : top + side, left : left + side] = shape > 0
    if blend:
        center = (left + side // 2, top + side // 2)
        out = cv2.seamlessClone(tile, image, shape, center, cv2.NORMAL_CLONE)
        out[~region] = image[~region]  # seamlessClone only writes inside the mask; make sure
        change = _changed(out, image) * region
        if change.max() < _MIN_CHANGE:
            return None
        mask = region & (change / change.max() > NSA_MASK_LEVEL)
        kind = "nsa"
    else:
        out = image.copy()
        out[region] = tile[shape > 0]
        change = _changed(out, image) * region
        if change.max() < _MIN_CHANGE:
            return None
        mask = region & (change > _VISIBLE)
        kind = "cutpaste"
    return Simulated(out, mask, region, kind)


def _scar(image: np.ndarray, donor: np.ndarray, rng: np.random.Generator) -> Simulated:
    size = image.shape[0]
    width, length = int(rng.integers(2, 7)), int(rng.integers(size // 12, size // 3))
    angle = float(rng.uniform(0, 360))
    margin = length // 2 + width
    cx, cy = (float(rng.integers(margin, size - margin)) for _ in range(2))
    region = np.zeros(image.shape[:2], np.uint8)
    box = cv2.boxPoints(((cx, cy), (length, width), angle))
    cv2.fillPoly(region, [np.round(box).astype(np.int32)], 1)
    stroke = region.astype(bool)
    out = image.copy()
    if rng.random() < 0.5:
        out[stroke] = rng.integers(0, 256, 3, dtype=np.uint8)
    else:  # donor pixels, as CutPaste-scar
        out[stroke] = donor[stroke]
    mask = stroke & (_changed(out, image) > 0)
    return Simulated(out, mask, stroke, "scar")


def perlin_noise(shape: tuple[int, int], scale: tuple[int, int],
                 rng: np.random.Generator) -> np.ndarray:
    """2-D Perlin noise, float32 in about [-1, 1] (the DRAEM generator, vectorised).

    Args:
        shape: Output (H, W); each must be a multiple of the matching `scale`.
        scale: Lattice cells along (H, W).
        rng: Random gradients.
    """
    delta = (scale[0] / shape[0], scale[1] / shape[1])
    cells = (shape[0] // scale[0], shape[1] // scale[1])
    grid = np.mgrid[0 : scale[0] : delta[0], 0 : scale[1] : delta[1]].transpose(1, 2, 0) % 1
    angles = 2 * math.pi * rng.random((scale[0] + 1, scale[1] + 1))
    gradients = np.stack((np.cos(angles), np.sin(angles)), axis=-1)

    def tile(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.repeat(np.repeat(gradients[y0:y1, x0:x1], cells[0], 0), cells[1], 1)

    def dot(g: np.ndarray, sy: float, sx: float) -> np.ndarray:
        shifted = np.stack((grid[..., 0] + sy, grid[..., 1] + sx), axis=-1)
        return (shifted * g[: shape[0], : shape[1]]).sum(axis=-1)

    n00 = dot(tile(0, -1, 0, -1), 0, 0)
    n10 = dot(tile(1, None, 0, -1), -1, 0)
    n01 = dot(tile(0, -1, 1, None), 0, -1)
    n11 = dot(tile(1, None, 1, None), -1, -1)
    fade = 6 * grid**5 - 15 * grid**4 + 10 * grid**3
    n0 = n00 * (1 - fade[..., 0]) + fade[..., 0] * n10
    n1 = n01 * (1 - fade[..., 0]) + fade[..., 0] * n11
    return (math.sqrt(2) * ((1 - fade[..., 1]) * n0 + fade[..., 1] * n1)).astype(np.float32)


def _texture(image: np.ndarray, foreign: np.ndarray, rng: np.random.Generator) -> Simulated | None:
    size = image.shape[0]
    scales = [s for s in (1, 2, 4, 8, 16, 32) if size % s == 0 and s <= 16]
    scale = (int(rng.choice(scales[1:])), int(rng.choice(scales[1:])))
    noise = perlin_noise((size, size), scale, rng)
    noise = cv2.warpAffine(noise, cv2.getRotationMatrix2D((size / 2, size / 2),
                                                          float(rng.uniform(-90, 90)), 1.0),
                           (size, size), borderMode=cv2.BORDER_REFLECT)
    # Keep one blob-sized part of the noise: threshold high, then one random component.
    mask = noise > 0.5
    if not mask.any():
        return None
    labels = cv2.connectedComponents(mask.astype(np.uint8))[1]
    ids, areas = np.unique(labels[mask], return_counts=True)
    keep = ids[areas >= MIN_AREA]
    if len(keep) == 0:
        return None
    chosen = rng.choice(keep, size=min(len(keep), int(rng.integers(1, 3))), replace=False)
    mask = np.isin(labels, chosen)
    if mask.mean() > 0.25:
        return None
    beta = float(rng.uniform(0.0, 0.5))  # opacity of the original under the texture
    blended = (1 - beta) * foreign.astype(np.float32) + beta * image.astype(np.float32)
    out = image.copy()
    out[mask] = np.clip(np.round(blended[mask]), 0, 255).astype(np.uint8)
    if (_changed(out, image) * mask).max() < _MIN_CHANGE:
        return None
    return Simulated(out, mask & (_changed(out, image) > 0), mask, "texture")


def simulate(kind: str, image: np.ndarray, *, donor: np.ndarray, foreign: np.ndarray,
             rng: np.random.Generator) -> Simulated:
    """Draws one anomaly of `kind` onto a normal image.

    Args:
        kind: One of `KINDS`.
        image: uint8 [S, S, 3] normal image.
        donor: uint8 [S, S, 3] another normal image of the same product (nsa, cutpaste, scar).
        foreign: uint8 [S, S, 3] an image of another product (texture).
        rng: The sample's random stream.

    Returns:
        The image with the anomaly, its exact mask (at least `MIN_AREA` pixels) and region.

    Raises:
        ValueError: an unknown kind or mismatched shapes.
        SimulationError: no visible anomaly after several attempts.
    """
    if kind not in KINDS:
        msg = f"unknown anomaly kind {kind!r}; known: {', '.join(KINDS)}"
        raise ValueError(msg)
    if image.shape != donor.shape or image.shape != foreign.shape or image.ndim != 3:
        msg = f"image {image.shape}, donor {donor.shape}, foreign {foreign.shape} must match"
        raise ValueError(msg)
    for _ in range(_ATTEMPTS):
        if kind in ("nsa", "cutpaste"):
            result = _nsa(image, donor, rng, blend=kind == "nsa")
        elif kind == "scar":
            result = _scar(image, donor, rng)
        else:
            result = _texture(image, foreign, rng)
        if result is not None and result.mask.sum() >= MIN_AREA:
            return result
    msg = f"no visible {kind} anomaly after {_ATTEMPTS} attempts"
    raise SimulationError(msg)
