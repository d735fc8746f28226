"""Drawn defects of the synthetic MVTec-layout set (``synthetic.py`` writes the layout).

Defects are drawn with numpy/cv2 on the test images, kinds round robin; the mask marks the
pixels that changed. Sizes are pixels at ``size=224`` and scale with ``size``; lengths and
radii are log-uniform, so small ones are common:

* ``scratch``: anti-aliased line 1-3 px wide, 14-110 px long, straight or bent by up to
  15 % of its length, blended 40-80 % towards black or white (mostly away from the local
  tone).
* ``crack``: dark random-walk polyline (10-30 steps of 2.5-5 px, heading drifting by
  N(0, 0.45) rad, a branch 40 % of the time), 1-2 px wide, darkened by 45-80 %.
* ``stain``: irregular soft-edged blob, 28-80 px long (aspect 0.55-1), brightness changed
  by only +-12-20 % and fine texture flattened 30-60 % towards a 3-px blur; mask where the
  blend weight is >= 0.35.
* ``hole``: disk 6-25 px across, dark (75 %, grey level 10-45) or bright (215-245), slightly
  shaded, with a 1-2 px rim of the opposite polarity (+-35-70 grey levels).
* ``color``: irregular patch 12-60 px long, soft 1-2 px edge, tinted with a random hue at
  saturation 0.25-0.5, luminance kept (the bases are grey, so this is a colour cast).
* ``cutpaste``: a patch of another image of the same category, rotated by 20-160 degrees
  and scaled 0.5-0.7x or 1.5-2x. Even occurrences are pasted as-is (20-60 px, brightness
  +-5-15 %, mask = the rectangle); odd ones are Poisson-blended with ``cv2.seamlessClone``
  as in NSA (Schlüter et al., 2022; 28-72 px, since blending washes out the rim), mask =
  ``|blended - original| > 8`` grey levels, closed and hole-filled.

A defect is redrawn (same seed stream) when its mask is under 10 px, the mean change under
it is below ``_MIN_VISIBLE_CHANGE`` grey levels, or, for stains and pastes, it changes
neither tone nor texture energy by ``_MIN_TEXTURE_GAP`` (a same-looking patch of grass is
no defect). Small, thin and faint defects stay in; invisible ones do not.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

DEFECT_KINDS: tuple[str, ...] = ("scratch", "crack", "stain", "hole", "color", "cutpaste")
_REFERENCE_SIZE = 224  # defect dimensions in this module are pixels at this image size
_SOFT_MASK_LEVEL = 0.35  # blend weight from which a soft-edged defect counts as defect
_SEAMLESS_THRESHOLD = 8.0  # grey levels; NSA-style mask of a Poisson-blended patch
_CLONE_PAD = 16  # reflect padding around the target of cv2.seamlessClone
_MIN_VISIBLE_CHANGE = 6.0  # mean max-channel change under the mask, grey levels
_MIN_TEXTURE_GAP = 0.25  # stains and pastes must change texture energy or tone this much
_MAX_ATTEMPTS = 30
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
Params = dict[str, Any]
Drawn = tuple[np.ndarray, np.ndarray, Params]  # (image float32 [H, W, 3], mask bool [H, W], params)


@dataclass(frozen=True)
class DefectSample:
    """One defect image with its clean original (kept in memory for checks and previews).

    Attributes:
        kind: One of ``DEFECT_KINDS``.
        image: The defect image, ``uint8 [H, W, 3]``.
        clean: The same image before the defect was drawn, ``uint8 [H, W, 3]``.
        mask: Ground truth, ``bool [H, W]``.
        source: Where the clean image came from.
        params: The drawn defect's parameters (JSON-friendly).
    """

    kind: str
    image: np.ndarray
    clean: np.ndarray
    mask: np.ndarray
    source: str
    params: Params = field(default_factory=dict)


DrawFn = Callable[[np.ndarray, np.random.Generator, float], Drawn]


def draw_defect(
    kind: str,
    base: np.ndarray,
    *,
    source: str,
    donor: np.ndarray,
    rng: np.random.Generator,
    occurrence: int,
) -> DefectSample:
    """Draw one defect of ``kind`` on ``base``, redrawing until it is visible.

    Args:
        kind: One of ``DEFECT_KINDS``.
        base: The clean image, ``uint8 [H, W, 3]``.
        source: Where ``base`` came from (kept in the sample).
        donor: Another normal image of the category (the patch source of ``cutpaste``).
        rng: Random stream; the same stream redraws the same defect.
        occurrence: How many defects of this kind came before (alternates pasting modes).

    Raises:
        RuntimeError: when no visible defect was drawn in ``_MAX_ATTEMPTS`` attempts.
    """
    clean = base.astype(np.float32)
    scale = base.shape[0] / _REFERENCE_SIZE
    min_area = max(6.0, 10.0 * scale * scale)
    for _ in range(_MAX_ATTEMPTS):
        if kind == "cutpaste":
            seamless = occurrence % 2 == 1  # half blended (NSA), half plain paste
            drawn, mask, params = _cutpaste(clean, rng, scale, donor.astype(np.float32), seamless)
        else:
            drawn, mask, params = _DRAWERS[kind](clean, rng, scale)
        image = _to_uint8(drawn)
        change = np.abs(image.astype(np.float32) - clean).max(axis=2)
        if mask.sum() < min_area or change[mask].mean() < _MIN_VISIBLE_CHANGE:
            continue
        gap = _texture_gap(clean, image.astype(np.float32), mask)
        if kind in {"stain", "cutpaste"} and gap < _MIN_TEXTURE_GAP:
            continue  # e.g. a same-looking patch on grass: changed pixels, but no visible defect
        params.update(mask_px=int(mask.sum()), mean_change=round(float(change[mask].mean()), 2))
        params["texture_gap"] = round(gap, 3)
        return DefectSample(kind, image, base, mask, source, params)
    msg = f"could not draw a visible {kind} on {source} in {_MAX_ATTEMPTS} attempts"
    raise RuntimeError(msg)


def _texture_gap(clean: np.ndarray, drawn: np.ndarray, mask: np.ndarray) -> float:
    """How differently the masked region reads, in texture or tone (0 = the same).

    The larger of ``|log|`` of the ratio of mean gradient magnitudes (texture energy) and
    the mean luminance shift in units of the clean region's luminance std.
    """
    clean_luma, drawn_luma = clean @ _LUMA, drawn @ _LUMA
    energy = [_gradient_magnitude(x)[mask].mean() + 1.0 for x in (clean_luma, drawn_luma)]
    tone = abs(drawn_luma[mask].mean() - clean_luma[mask].mean()) / (clean_luma[mask].std() + 1.0)
    return float(max(abs(np.log(energy[1] / energy[0])), tone))


def _gradient_magnitude(luma: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of a float luminance image."""
    gx = cv2.Sobel(luma, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(luma, cv2.CV_32F, 0, 1, ksize=3)
    return np.hypot(gx, gy)


def _scratch(image: np.ndarray, rng: np.random.Generator, scale: float) -> Drawn:
    """Thin straight or slightly bent line, darker or brighter than its surroundings."""
    h, w = image.shape[:2]
    length = _log_uniform(rng, 14, 110) * scale
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    half = np.abs(direction) * length / 2
    centre = np.array(
        [rng.uniform(half[0] + 3, w - half[0] - 3), rng.uniform(half[1] + 3, h - half[1] - 3)]
    )
    bend = rng.uniform(-0.15, 0.15) * length
    start, end = centre - direction * length / 2, centre + direction * length / 2
    control = centre + np.array([-direction[1], direction[0]]) * 2 * bend
    t = np.linspace(0, 1, 32)[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end  # quadratic Bezier
    width = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    alpha = _stroke_alpha(image.shape, points, max(1, round(width * scale)))
    dark = rng.random() < np.clip((image[alpha > 0].mean() - 60) / 100, 0.15, 0.85)
    amount = rng.uniform(0.4, 0.8)
    target = 0.0 if dark else 255.0
    drawn = image + (alpha * amount)[:, :, None] * (target - image)
    params = {"length_px": length, "width_px": width, "bend_px": bend, "amount": amount}
    return (
        drawn,
        _stroke_mask(alpha),
        _rounded({**params, "polarity": "dark" if dark else "bright"}),
    )


def _crack(image: np.ndarray, rng: np.random.Generator, scale: float) -> Drawn:
    """Dark random-walk polyline, sometimes with one branch."""
    h, w = image.shape[:2]
    steps = int(rng.integers(10, 31))
    step = rng.uniform(2.5, 5.0) * scale
    trunk = _random_walk(rng, steps, step, rng.uniform(0, 2 * np.pi))
    walks = [trunk]
    if rng.random() < 0.4:
        fork = trunk[int(rng.integers(2, steps - 2))]
        heading = rng.uniform(0, 2 * np.pi)
        walks.append(fork + _random_walk(rng, max(3, steps // 3), step, heading))
    lo, hi = np.min([p.min(0) for p in walks], 0), np.max([p.max(0) for p in walks], 0)
    room = np.array([w, h]) - 4 - (hi - lo)
    offset = 2 - lo + rng.uniform(0, 1, 2) * np.maximum(room, 0)
    width = int(rng.choice([1, 2]))
    alpha = np.zeros(image.shape[:2], np.float32)
    for walk in walks:
        alpha = np.maximum(
            alpha, _stroke_alpha(image.shape, walk + offset, max(1, round(width * scale)))
        )
    depth = rng.uniform(0.45, 0.8)
    drawn = image * (1 - alpha * depth)[:, :, None]
    params = {"steps": steps, "step_px": step, "width_px": width, "depth": depth}
    return drawn, _stroke_mask(alpha), _rounded({**params, "branched": len(walks) > 1})


def _stain(image: np.ndarray, rng: np.random.Generator, scale: float) -> Drawn:
    """Faint soft-edged blob: brightness changed by 12-20 %, fine texture partly filled in.

    Filling in (flattening towards a 3-px blur by 30-60 %) is what makes a faint stain
    findable by eye on busy textures such as grass, where 15 % darker alone is not.
    """
    radius = _log_uniform(rng, 14, 40) * scale
    minor = radius * rng.uniform(0.55, 1.0)
    alpha = _blob_alpha(image.shape, rng, radius, minor, soft=rng.uniform(0.15, 0.3) * minor)
    strength = rng.uniform(0.12, 0.20)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    flatten = rng.uniform(0.3, 0.6)
    smooth = cv2.GaussianBlur(image, (0, 0), 3.0 * scale)
    weight = alpha[:, :, None]
    drawn = image + weight * flatten * (smooth - image)
    drawn = drawn * (1 + sign * strength * weight)
    params = {"radius_px": radius, "minor_px": minor, "strength": sign * strength}
    return drawn, alpha >= _SOFT_MASK_LEVEL, _rounded({**params, "flatten": flatten})


def _hole(image: np.ndarray, rng: np.random.Generator, scale: float) -> Drawn:
    """Dark (or bright) disk with a rim of the opposite polarity and slight shading."""
    h, w = image.shape[:2]
    radius = _log_uniform(rng, 3.0, 12.5) * scale
    rim = int(rng.choice([1, 2])) * max(1, round(scale))
    margin = radius + rim + 2
    centre = (rng.uniform(margin, w - margin), rng.uniform(margin, h - margin))
    inner = _circle_alpha(image.shape, centre, radius, thickness=-1)
    ring = _circle_alpha(image.shape, centre, radius + rim / 2, thickness=rim) * (1 - inner)
    dark = rng.random() < 0.75
    level = rng.uniform(10, 45) if dark else rng.uniform(215, 245)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = rng.uniform(0, 2 * np.pi)
    shade = (
        1 + 0.25 * ((xx - centre[0]) * np.cos(light) + (yy - centre[1]) * np.sin(light)) / radius
    )
    fill = level * shade[:, :, None] + 0.2 * (image - image.mean())  # a little texture survives
    drawn = image + inner[:, :, None] * (fill - image)
    rim_delta = (1 if dark else -1) * rng.uniform(35, 70)
    drawn = drawn + ring[:, :, None] * rim_delta
    params = {"radius_px": radius, "rim_px": rim, "level": level, "rim_delta": rim_delta}
    return (
        drawn,
        (inner + ring) > 0.25,
        _rounded({**params, "polarity": "dark" if dark else "bright"}),
    )


def _color(image: np.ndarray, rng: np.random.Generator, scale: float) -> Drawn:
    """Soft irregular patch with a colour cast of random hue; luminance is kept."""
    radius = _log_uniform(rng, 6, 30) * scale
    minor = radius * rng.uniform(0.5, 1.0)
    alpha = _blob_alpha(image.shape, rng, radius, minor, soft=rng.uniform(1.0, 2.0) * scale)
    hue, saturation = rng.uniform(0, 1), rng.uniform(0.25, 0.5)
    gains = np.array(colorsys.hsv_to_rgb(hue, saturation, 1.0), dtype=np.float32)
    gains /= gains @ _LUMA
    drawn = image + alpha[:, :, None] * (image * gains - image)
    params = {"radius_px": radius, "minor_px": minor, "hue": hue, "saturation": saturation}
    return drawn, alpha >= _SOFT_MASK_LEVEL, _rounded(params)


def _cutpaste(
    image: np.ndarray, rng: np.random.Generator, scale: float, donor: np.ndarray, seamless: bool
) -> Drawn:
    """Rotated, rescaled patch of ``donor`` pasted plainly or Poisson-blended (NSA)."""
    h, w = image.shape[:2]
    # Poisson blending washes out the rim of a patch, so blended patches are drawn larger.
    low, high, least = (28, 72, 18) if seamless else (20, 60, 14)
    side = _log_uniform(rng, low, high) * scale
    other = side * rng.uniform(0.45, 1.0)
    pw, ph = (side, other) if rng.random() < 0.5 else (other, side)
    pw, ph = max(least, round(pw)), max(least, round(ph))
    angle = rng.choice([-1.0, 1.0]) * rng.uniform(20, 160)
    # A clearly different scale: a same-scale patch of an isotropic texture is no defect.
    zoom = rng.uniform(0.5, 0.7) if rng.random() < 0.5 else rng.uniform(1.5, 2.0)
    reach = min(0.75 * max(pw, ph) / zoom, w / 2 - 1)  # keep the source mostly inside
    source = (rng.uniform(reach, w - reach), rng.uniform(reach, h - reach))
    patch = _warp_patch(donor, source, angle, zoom, (pw, ph))
    x0, y0 = int(rng.integers(3, w - pw - 3)), int(rng.integers(3, h - ph - 3))
    params: Params = {"width_px": pw, "height_px": ph, "angle_deg": angle, "zoom": zoom}
    if seamless:
        drawn, mask = _poisson_paste(image, patch, (x0, y0))
        return drawn, mask, _rounded({**params, "blend": "seamlessClone"})
    gain = 1 + rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.15)
    drawn = image.copy()
    drawn[y0 : y0 + ph, x0 : x0 + pw] = patch * gain
    mask = np.zeros((h, w), bool)
    mask[y0 : y0 + ph, x0 : x0 + pw] = True
    return drawn, mask, _rounded({**params, "blend": "paste", "gain": gain})


def _poisson_paste(
    image: np.ndarray, patch: np.ndarray, corner: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson-blend ``patch`` with its top-left at ``corner``; mask what changed (as NSA).

    The target is reflect-padded first because ``cv2.seamlessClone`` shifts and clips
    patches that come near the image border.
    """
    x0, y0 = corner
    ph, pw = patch.shape[:2]
    pad = _CLONE_PAD
    target = cv2.copyMakeBorder(_to_uint8(image), pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    clone_mask = np.full((ph, pw), 255, np.uint8)
    centre = (pad + x0 + pw // 2, pad + y0 + ph // 2)
    blended = cv2.seamlessClone(_to_uint8(patch), target, clone_mask, centre, cv2.NORMAL_CLONE)
    drawn = blended[pad:-pad, pad:-pad].astype(np.float32)
    near = np.zeros(image.shape[:2], bool)
    near[max(0, y0 - 2) : y0 + ph + 2, max(0, x0 - 2) : x0 + pw + 2] = True
    changed = (np.abs(drawn - image).max(axis=2) > _SEAMLESS_THRESHOLD) & near
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(changed, np.ones((3, 3)))) & near
    return drawn, mask


_DRAWERS: dict[str, DrawFn] = {
    "scratch": _scratch,
    "crack": _crack,
    "stain": _stain,
    "hole": _hole,
    "color": _color,
}


# ---------------------------------------------------------------- drawing primitives


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """Sample so that small sizes are as common as large ones on a log scale."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _random_walk(rng: np.random.Generator, steps: int, step: float, heading: float) -> np.ndarray:
    """``[steps + 1, 2]`` x/y points of a walk whose heading drifts by N(0, 0.45) rad a step."""
    headings = heading + np.cumsum(rng.normal(0, 0.45, steps))
    moves = step * np.stack([np.cos(headings), np.sin(headings)], axis=1)
    return np.vstack([np.zeros((1, 2)), np.cumsum(moves, axis=0)])


def _stroke_alpha(shape: tuple[int, ...], points: np.ndarray, width: int) -> np.ndarray:
    """Anti-aliased polyline through x/y ``points`` as a float weight map in [0, 1]."""
    canvas = np.zeros(shape[:2], np.uint8)
    fixed = np.rint(np.asarray(points) * 16).astype(np.int32).reshape(-1, 1, 2)  # 4 frac. bits
    cv2.polylines(canvas, [fixed], False, 255, thickness=width, lineType=cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255


def _stroke_mask(alpha: np.ndarray) -> np.ndarray:
    """Mask of a thin stroke: every touched pixel (anti-aliasing included)."""
    return alpha > 0.1


def _circle_alpha(
    shape: tuple[int, ...], centre: tuple[float, float], radius: float, thickness: int
) -> np.ndarray:
    """Anti-aliased filled disk (``thickness=-1``) or ring as a weight map in [0, 1]."""
    canvas = np.zeros(shape[:2], np.uint8)
    fixed = (round(centre[0] * 16), round(centre[1] * 16))
    cv2.circle(canvas, fixed, round(radius * 16), 255, thickness, cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255


def _blob_alpha(
    shape: tuple[int, ...], rng: np.random.Generator, major: float, minor: float, soft: float
) -> np.ndarray:
    """Irregular ellipse (wobbly outline) blurred by ``soft`` px, as a weight map in [0, 1]."""
    h, w = shape[:2]
    margin = major + 2 * soft + 2
    cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / major
    v = (-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)) / minor
    theta = np.arctan2(v, u)
    outline = np.ones_like(theta)
    for k in (2, 3, 4):
        outline += rng.uniform(0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    hard = (np.hypot(u, v) < outline).astype(np.float32)
    return cv2.GaussianBlur(hard, (0, 0), soft) if soft > 0.3 else hard


def _warp_patch(
    donor: np.ndarray,
    source: tuple[float, float],
    angle_deg: float,
    zoom: float,
    size: tuple[int, int],
) -> np.ndarray:
    """``size=(w, h)`` patch of ``donor`` around ``source``, rotated and scaled by ``zoom``."""
    pw, ph = size
    theta = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) / zoom
    # Patch pixel p maps to donor pixel source + rotation @ (p - patch centre).
    offset = np.asarray(source) - rotation @ np.array([(pw - 1) / 2, (ph - 1) / 2])
    matrix = np.hstack([rotation, offset[:, None]]).astype(np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return cv2.warpAffine(donor, matrix, (pw, ph), flags=flags, borderMode=cv2.BORDER_REFLECT_101)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Round and clip a float image to ``uint8``."""
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _rounded(params: Params) -> Params:
    """Params with numpy scalars made plain and floats rounded (stable, readable JSON)."""
    out: Params = {}
    for key, value in params.items():
        if isinstance(value, (float, np.floating)):
            out[key] = round(float(value), 3)
        elif isinstance(value, np.integer | np.bool_):
            out[key] = value.item()
        else:
            out[key] = value
    return out
