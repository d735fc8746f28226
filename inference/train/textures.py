"""Procedural stochastic textures: products whose every normal image is a new realisation.

The wheel photos give parts whose normal images are the same window seen again, so their
few-shot maps stay low wherever nothing changed. A stochastic texture (a lawn, a gravel bed,
a woven or sprayed surface) is different: a reference and a normal image are two different
patches of the same process, so every patch of the normal image is a little far from the
reference and the calibrated map is raised everywhere while its maximum stays below the
threshold. An LLM that never saw such maps says "Yes" to them. These families are generic
(filtered noise, cells, strokes, blobs, speckle, grain), drawn from seeds, never from the
evaluation set's sources (`datasets.EVALUATION_SOURCES`).

A texture image is named ``procedural:<family>:<index>``; its palette and scale come from the
family, the realisation from the index (`render`). `texture_products` lists the families as
file products (`datasets.Product`): a pool's references are some realisations, its normal
images the others.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import cv2
import numpy as np

__all__ = ["FAMILIES", "PREFIX", "REALISATIONS", "render", "texture_sources"]

PREFIX = "procedural:"
REALISATIONS = 16  # images per family (a pool takes 1 or 4 as references)
_SIDE = 256


def _palette(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two RGB colours of a family (float, 0-255), not too close."""
    base = rng.uniform(40, 200, 3)
    other = np.clip(base + rng.choice([-1, 1], 3) * rng.uniform(30, 80, 3), 0, 255)
    return base, other


def _smooth_noise(rng: np.random.Generator, sigma: float) -> np.ndarray:
    """[S, S] Gaussian-filtered white noise, standardised."""
    field = cv2.GaussianBlur(rng.standard_normal((_SIDE, _SIDE)).astype(np.float32), (0, 0),
                             sigma, borderType=cv2.BORDER_REFLECT)
    return (field - field.mean()) / (field.std() + 1e-6)


def _noise(style: np.random.Generator, rng: np.random.Generator) -> np.ndarray:
    """Clouds: noise summed over three scales."""
    sigmas = style.uniform(1.0, 10.0, 3)
    weights = style.uniform(0.3, 1.0, 3)
    field = sum(w * _smooth_noise(rng, s) for w, s in zip(weights, sigmas, strict=True))
    return np.asarray(field, np.float32)


def _cells(style: np.random.Generator, rng: np.random.Generator) -> np.ndarray:
    """Cells (pebbles, grains): each Voronoi cell its own shade, darker at its border."""
    count = int(style.uniform(40, 220))
    points = rng.uniform(0, _SIDE, (count, 2)).astype(np.float32)
    shades = rng.standard_normal(count).astype(np.float32)
    yy, xx = np.mgrid[0:_SIDE, 0:_SIDE].astype(np.float32)
    distance = (yy[..., None] - points[:, 0]) ** 2 + (xx[..., None] - points[:, 1]) ** 2
    order = np.argpartition(distance, 1, axis=-1)[..., :2]  # the two nearest, in order
    nearest = np.take_along_axis(distance, order, -1)
    border = np.sqrt(nearest[..., 1]) - np.sqrt(nearest[..., 0])
    edge = np.clip(border / style.uniform(2.0, 6.0), 0, 1)
    return shades[order[..., 0]] * edge + 0.3 * _smooth_noise(rng, 1.0) - (1 - edge)


def _strokes(style: np.random.Generator, rng: np.random.Generator) -> np.ndarray:
    """Strokes (fibres, blades, scratches of a brushed finish) around a main direction."""
    canvas = np.zeros((_SIDE, _SIDE), np.float32)
    angle, spread = style.uniform(0, np.pi), style.uniform(0.05, 0.6)
    length, count = style.uniform(6, 40), int(style.uniform(300, 1500))
    for _ in range(count):
        y, x = rng.uniform(0, _SIDE, 2)
        theta = angle + rng.normal(0, spread)
        dy, dx = np.sin(theta) * length / 2, np.cos(theta) * length / 2
        value = float(rng.uniform(-1, 1))
        cv2.line(canvas, (int(x - dx), int(y - dy)), (int(x + dx), int(y + dy)), value,
                 int(rng.integers(1, 3)), cv2.LINE_AA)
    return canvas + 0.2 * _smooth_noise(rng, 2.0)


def _blobs(style: np.random.Generator, rng: np.random.Generator) -> np.ndarray:
    """Blobs (stains, foam, porous material): thresholded smooth noise, softened."""
    sigma = style.uniform(2.0, 8.0)
    level = style.uniform(-0.5, 0.5)
    field = (_smooth_noise(rng, sigma) > level).astype(np.float32)
    return cv2.GaussianBlur(field, (0, 0), 1.0) + 0.15 * _smooth_noise(rng, 1.0)


def _speckle(style: np.random.Generator, rng: np.random.Generator) -> np.ndarray:
    """Speckle (sprayed coatings, sand): random dots of several sizes on fine noise."""
    canvas = 0.3 * _smooth_noise(rng, 0.8)
    count, radius = int(style.uniform(200, 1200)), style.uniform(1.0, 4.0)
    for _ in range(count):
        y, x = (int(v) for v in rng.integers(0, _SIDE, 2))
        cv2.circle(canvas, (x, y), max(1, int(rng.exponential(radius))),
                   float(rng.choice([-1.5, 1.5])), -1, cv2.LINE_AA)
    return canvas


def _grain(style: np.random.Generator, rng: np.random.Generator) -> np.ndarray:
    """Grain (wood, brushed or woven surfaces): stretched noise with a wavy direction."""
    stretch = style.uniform(4.0, 20.0)
    field = cv2.GaussianBlur(rng.standard_normal((_SIDE, _SIDE)).astype(np.float32), (0, 0),
                             sigmaX=stretch, sigmaY=style.uniform(0.7, 2.0))
    field = (field - field.mean()) / (field.std() + 1e-6)
    waves = np.sin(np.arange(_SIDE, dtype=np.float32) / style.uniform(2.0, 8.0))[:, None]
    texture = field + style.uniform(0.0, 1.0) * waves
    turn = cv2.getRotationMatrix2D((_SIDE / 2, _SIDE / 2), float(style.uniform(0, 180)), 1.0)
    return cv2.warpAffine(texture, turn, (_SIDE, _SIDE), borderMode=cv2.BORDER_REFLECT_101)


FAMILIES: dict[str, Callable[[np.random.Generator, np.random.Generator], np.ndarray]] = {
    "noise": _noise, "cells": _cells, "strokes": _strokes, "blobs": _blobs,
    "speckle": _speckle, "grain": _grain,
}


def render(source: str) -> np.ndarray:
    """The uint8 RGB [256, 256, 3] image named ``procedural:<family>:<index>``.

    Deterministic: the family fixes the palette and the texture's scale and direction, the
    index draws the realisation.

    Raises:
        ValueError: not a ``procedural:`` name, or an unknown family.
    """
    parts = source.removeprefix(PREFIX).split(":") if source.startswith(PREFIX) else []
    if len(parts) != 2 or parts[0] not in FAMILIES or not parts[1].isdigit():
        msg = f"{source!r}: expected {PREFIX}<family>:<index>, families {', '.join(FAMILIES)}"
        raise ValueError(msg)
    family, index = parts[0], int(parts[1])
    key = zlib.crc32(family.encode())
    style = np.random.default_rng([key, 0])
    rng = np.random.default_rng([key, 1, index])
    field = FAMILIES[family](style, rng)
    low, high = np.percentile(field, [1, 99])
    weight = np.clip((field - low) / max(high - low, 1e-6), 0, 1)[..., None]
    base, other = _palette(style)
    image = base * (1 - weight) + other * weight
    return np.clip(image, 0, 255).astype(np.uint8)


def texture_sources(families: Sequence[str] = tuple(FAMILIES)) -> dict[str, tuple[str, ...]]:
    """The image names of each family (`REALISATIONS` each).

    Raises:
        ValueError: an unknown family.
    """
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        msg = f"unknown texture families {unknown}; known: {', '.join(FAMILIES)}"
        raise ValueError(msg)
    return {f: tuple(f"{PREFIX}{f}:{i}" for i in range(REALISATIONS)) for f in families}
