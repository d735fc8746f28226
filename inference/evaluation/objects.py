"""Drawn parts in random pose with their own defect kinds (the objects of ``synthetic.py``).

Each image is a metal part drawn on a belt-like background at a random rotation (0-360
degrees), position (centre within 12 % of the image side from the middle) and scale
(0.92-1.08), under a random light direction and exposure; normal images differ only by that
pose, light and the sensor noise, so a detector must judge the part in any pose. Parts:

* ``gear``: a wheel with 10-14 teeth (fixed per category), a bore and a key slot.
* ``bracket``: an L-shaped plate with rounded corners and three holes (not symmetric: its
  pose is fully determined by the picture).

Defect kinds (``OBJECT_DEFECT_KINDS``), drawn in part coordinates before the pose is applied,
so they turn with the part:

* ``missing``: a disk of radius 8-16 px centred on the outline removes a piece of the part.
* ``crack``: a dark random-walk line, 1-2 px wide and 14-40 px long, from the outline inwards.
* ``extra``: a blob of part material (radius 6-14 px) welded onto the outline.
* ``dent``: the outline pushed in by 3-6 px over 16-30 px, with a dark crease along it.

The mask marks the pixels whose grey level changed by more than ``_MASK_LEVEL`` (the defect
is drawn twice, with and without, under the same pose, light and noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

OBJECT_CATEGORIES: tuple[str, ...] = ("bracket", "gear")
OBJECT_DEFECT_KINDS: tuple[str, ...] = ("missing", "crack", "extra", "dent")
_CANVAS = 448  # drawn at twice the reference size of 224 px, then area-resized
_MASK_LEVEL = 10.0  # grey levels (0-255) that count as changed by the defect
_MAX_ATTEMPTS = 30


@dataclass(frozen=True)
class Pose:
    """Where and how the part lies, and the light."""

    angle: float  # degrees
    cx: float  # centre, canvas pixels
    cy: float
    scale: float
    light: float  # direction of the shading gradient, radians
    exposure: float  # multiplies the whole image
    seed: int  # sensor noise and background texture


def random_pose(rng: np.random.Generator) -> Pose:
    """A uniformly random rotation, a jittered position and scale, random light."""
    jitter = 0.12 * _CANVAS
    return Pose(
        angle=float(rng.uniform(0, 360)),
        cx=float(_CANVAS / 2 + rng.uniform(-jitter, jitter)),
        cy=float(_CANVAS / 2 + rng.uniform(-jitter, jitter)),
        scale=float(rng.uniform(0.92, 1.08)),
        light=float(rng.uniform(0, 2 * math.pi)),
        exposure=float(rng.uniform(0.9, 1.1)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )


# ------------------------------------------------------------------ part shapes (part frame)
def _part_masks(category: str) -> tuple[np.ndarray, np.ndarray]:
    """The part's solid and its holes, drawn centred on a canvas-sized grid (part frame)."""
    solid = np.zeros((_CANVAS, _CANVAS), np.uint8)
    holes = np.zeros_like(solid)
    c = _CANVAS // 2
    if category == "gear":
        teeth, outer, root = 12, 150, 126
        points = []
        for i in range(teeth * 4):
            phase = i % 4
            radius = outer if phase in (1, 2) else root
            angle = 2 * math.pi * (i + (0.15 if phase in (0, 2) else -0.15)) / (teeth * 4)
            points.append((c + radius * math.cos(angle), c + radius * math.sin(angle)))
        cv2.fillPoly(solid, [np.round(np.array(points)).astype(np.int32)], 255)
        cv2.circle(holes, (c, c), 40, 255, -1)
        cv2.rectangle(holes, (c - 10, c - 54), (c + 10, c - 30), 255, -1)
    elif category == "bracket":
        plate = np.array([(-150, -130), (40, -130), (40, 40), (150, 40), (150, 130),
                          (-150, 130)], np.float64)
        cv2.fillPoly(solid, [np.round(plate + c).astype(np.int32)], 255)
        solid = cv2.morphologyEx(solid, cv2.MORPH_OPEN,
                                 cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (41, 41)))
        for x, y, r in ((-95, -75, 22), (-95, 80, 16), (100, 85, 18)):
            cv2.circle(holes, (c + x, c + y), r, 255, -1)
    else:
        msg = f"unknown object category {category!r}; choose from {OBJECT_CATEGORIES}"
        raise ValueError(msg)
    return solid, holes


def _outline_point(part: np.ndarray, rng: np.random.Generator) -> tuple[int, int, float]:
    """A random point on the outer outline and the outward normal's angle there."""
    contours, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=len)[:, 0, :]
    index = int(rng.integers(len(contour)))
    x, y = contour[index]
    cx, cy = contour[:, 0].mean(), contour[:, 1].mean()
    return int(x), int(y), math.atan2(y - cy, x - cx)


def _defect(kind: str, solid: np.ndarray, holes: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """The part's solid after the defect and a dark-ink layer (0-1) drawn on it."""
    part = cv2.bitwise_and(solid, cv2.bitwise_not(holes))
    x, y, normal = _outline_point(part, rng)
    ink = np.zeros(solid.shape, np.float32)
    solid = solid.copy()
    params: dict[str, float] = {"x": x, "y": y}
    if kind == "missing":
        radius = int(rng.uniform(8, 16) * 2)
        cv2.circle(solid, (x, y), radius, 0, -1)
        params["radius"] = radius / 2
    elif kind == "extra":
        radius = rng.uniform(6, 14) * 2
        centre = (x + math.cos(normal) * radius * 0.6, y + math.sin(normal) * radius * 0.6)
        blob = np.zeros_like(solid)
        cv2.ellipse(blob, (int(centre[0]), int(centre[1])),
                    (int(radius), int(radius * rng.uniform(0.6, 1.0))),
                    float(rng.uniform(0, 180)), 0, 360, 255, -1)
        solid = cv2.bitwise_or(solid, blob)
        params["radius"] = radius / 2
    elif kind == "dent":
        depth, width = rng.uniform(3, 6) * 2, rng.uniform(16, 30) * 2
        centre = (int(x + math.cos(normal) * (width / 2 - depth)),
                  int(y + math.sin(normal) * (width / 2 - depth)))
        cv2.circle(solid, centre, int(width / 2), 0, -1)
        crease = np.zeros_like(solid)
        cv2.circle(crease, centre, int(width / 2) + 3, 255, 4)
        ink = np.maximum(ink, (crease > 0) * (solid > 0) * 0.55)
        params.update(depth=depth / 2, width=width / 2)
    elif kind == "crack":
        length = rng.uniform(14, 40) * 2
        steps = max(4, int(length / 6))
        heading = normal + math.pi + rng.normal(0, 0.3)
        points = [(float(x), float(y))]
        for _ in range(steps):
            heading += rng.normal(0, 0.45)
            points.append((points[-1][0] + 6 * math.cos(heading),
                           points[-1][1] + 6 * math.sin(heading)))
        line = np.zeros_like(solid)
        cv2.polylines(line, [np.round(np.array(points)).astype(np.int32)], False, 255,
                      int(rng.integers(2, 5)), lineType=cv2.LINE_AA)
        ink = np.maximum(ink, line.astype(np.float32) / 255 * rng.uniform(0.6, 0.85))
        params["length"] = length / 2
    else:
        msg = f"unknown object defect kind {kind!r}; choose from {OBJECT_DEFECT_KINDS}"
        raise ValueError(msg)
    return solid, ink, params


# ------------------------------------------------------------------ rendering
def _render(solid: np.ndarray, holes: np.ndarray, ink: np.ndarray, pose: Pose,
            size: int) -> np.ndarray:
    """Pose the part, shade it, put it on the background, add noise; uint8 [size, size, 3]."""
    noise_rng = np.random.default_rng(pose.seed)
    matrix = cv2.getRotationMatrix2D((_CANVAS / 2, _CANVAS / 2), pose.angle, pose.scale)
    matrix[:, 2] += (pose.cx - _CANVAS / 2, pose.cy - _CANVAS / 2)
    part = cv2.bitwise_and(solid, cv2.bitwise_not(holes)).astype(np.float32) / 255

    def warp(layer: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(layer, matrix, (_CANVAS, _CANVAS), flags=cv2.INTER_LINEAR)

    alpha = warp(part)
    ink = warp(ink)
    yy, xx = np.mgrid[0:_CANVAS, 0:_CANVAS].astype(np.float32) / _CANVAS
    # Background: a fine-grained belt texture (fixed statistics, random per image).
    grain = cv2.GaussianBlur(noise_rng.normal(0, 1, (_CANVAS, _CANVAS)).astype(np.float32),
                             (0, 0), 1.5)
    background = 70 + 10 * grain + 8 * (yy - 0.5)
    # Metal: a light gradient in the light's direction, brushed along the part's x axis.
    brushed = cv2.GaussianBlur(noise_rng.normal(0, 1, (_CANVAS, _CANVAS)).astype(np.float32),
                               (0, 0), sigmaX=6, sigmaY=0.7)
    brushed = warp(brushed)
    gradient = (np.cos(pose.light) * (xx - 0.5) + np.sin(pose.light) * (yy - 0.5))
    metal = 170 + 60 * gradient + 6 * brushed
    # Edge highlight/shadow: the part's rim catches light from one side.
    grad_y, grad_x = np.gradient(cv2.GaussianBlur(alpha, (0, 0), 2.0))
    rim = -(np.cos(pose.light) * grad_x + np.sin(pose.light) * grad_y) * 600
    shadow = cv2.GaussianBlur(np.roll(alpha, (6, 6), axis=(0, 1)), (0, 0), 5) * 25
    image = (background - shadow) * (1 - alpha) + (metal + rim) * alpha
    image = image * (1 - ink * alpha) + 25 * ink * alpha
    image = image * pose.exposure
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    image = image + noise_rng.normal(0, 2.0, image.shape)
    grey = np.clip(image, 0, 255)
    tint = np.array([1.0, 0.99, 0.96], np.float32)  # a slightly warm light
    return np.clip(grey[:, :, None] * tint, 0, 255).round().astype(np.uint8)


def draw_object(category: str, rng: np.random.Generator, *, size: int = 224,
                kind: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """One image of a part in random pose, optionally with a defect.

    Args:
        category: One of ``OBJECT_CATEGORIES``.
        rng: Random stream (pose, light, noise, defect).
        size: Side of the square image.
        kind: None for a normal part, else one of ``OBJECT_DEFECT_KINDS``.

    Returns:
        ``(image, clean, mask, params)``: the image and the same part without the defect
        (uint8 [size, size, 3]), the mask (bool [size, size], None for a normal part) and the
        pose and defect parameters.
    """
    solid, holes = _part_masks(category)
    pose = random_pose(rng)
    clean = _render(solid, holes, np.zeros(solid.shape, np.float32), pose, size)
    params: dict = {"pose": {k: round(float(v), 3) for k, v in pose.__dict__.items()}}
    if kind is None:
        return clean, clean, None, params
    for _ in range(_MAX_ATTEMPTS):
        broken, ink, defect_params = _defect(kind, solid, holes, rng)
        image = _render(broken, holes, ink, pose, size)
        # The same noise is drawn in both renders, so only the defect differs.
        change = np.abs(image.astype(np.float32) - clean.astype(np.float32)).max(axis=2)
        mask = change > _MASK_LEVEL
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE,
                                np.ones((3, 3), np.uint8)).astype(bool)
        if mask.sum() >= 10:
            params["defect"] = {k: round(float(v), 2) for k, v in defect_params.items()}
            return image, clean, mask, params
    msg = f"{category}/{kind}: no visible defect after {_MAX_ATTEMPTS} attempts"
    raise RuntimeError(msg)
