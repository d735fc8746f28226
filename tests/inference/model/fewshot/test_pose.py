"""Silhouettes and the pose between two of them, on drawn parts and a plain texture."""

import math

import cv2
import numpy as np
import pytest
from PIL import Image

from inference.evaluation.objects import draw_object
from inference.model.fewshot.pose import align, blob_map, difference, silhouette


def grey(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).convert("L"), dtype=np.float32)


def turned(image: np.ndarray, angle: float) -> np.ndarray:
    """The picture turned counter-clockwise (as displayed), the corners filled with belt."""
    fill = tuple(int(v) for v in image[0, 0])
    return np.asarray(Image.fromarray(image).rotate(angle, resample=Image.Resampling.BILINEAR,
                                                    fillcolor=fill))


def symmetric_gear(teeth: int = 12, size: int = 224) -> np.ndarray:
    """A bright n-fold gear without bore or key on a dark belt: no rotation tells n apart."""
    points = []
    c = size / 2
    for i in range(teeth * 4):
        radius = 75 if i % 4 in (1, 2) else 63
        angle = 2 * math.pi * (i + (0.15 if i % 4 in (0, 2) else -0.15)) / (teeth * 4)
        points.append((c + radius * math.cos(angle), c + radius * math.sin(angle)))
    canvas = np.full((size, size), 70, np.uint8)
    cv2.fillPoly(canvas, [np.round(np.array(points)).astype(np.int32)], 190)
    return np.stack([canvas] * 3, axis=-1)


def test_a_part_has_a_silhouette_and_a_texture_none():
    part, _, _, _ = draw_object("bracket", np.random.default_rng(3))
    texture = np.random.default_rng(3).integers(0, 255, (224, 224, 3), dtype=np.uint8)
    assert silhouette(grey(part)) is not None
    assert silhouette(grey(texture)) is None


@pytest.mark.parametrize("angle", [0.0, 37.0, 100.0, -75.0, 200.0])
def test_align_recovers_the_rotation_of_an_asymmetric_part(angle):
    part, _, _, _ = draw_object("bracket", np.random.default_rng(1))
    reference = silhouette(grey(part))
    query = silhouette(grey(turned(part, angle)), strict=False)
    assert reference is not None
    assert query is not None
    pose = align(query, reference)
    assert abs((pose.angle - angle + 180) % 360 - 180) < 1.0
    assert pose.scale == pytest.approx(1.0, abs=0.02)  # the border cuts a corner at some angles
    assert float(blob_map(difference(query, reference, pose)).max()) < 0.2


@pytest.mark.parametrize("angle", [7.0, 22.0, 95.0, 161.0])
def test_a_12_fold_gear_resolves_to_any_equivalent_rotation(angle):
    gear = symmetric_gear()
    reference = silhouette(grey(gear))
    query = silhouette(grey(turned(gear, angle)), strict=False)
    assert reference is not None
    assert query is not None
    pose = align(query, reference)
    residual = (pose.angle - angle) % 30.0
    assert min(residual, 30.0 - residual) < 1.0
    assert float(blob_map(difference(query, reference, pose)).max()) < 0.2


def test_a_missing_piece_stands_out_of_the_posed_difference():
    rng = np.random.default_rng(4)
    normal, _, _, _ = draw_object("gear", rng)
    broken, _, mask, _ = draw_object("gear", rng, kind="missing")
    reference = silhouette(grey(normal))
    query = silhouette(grey(broken), strict=False)
    assert reference is not None
    assert query is not None
    assert mask is not None
    blobs = blob_map(difference(query, reference, align(query, reference)))
    assert float(blobs.max()) > 0.5
    peak = np.unravel_index(int(blobs.argmax()), blobs.shape)
    assert mask[max(0, peak[0] - 8) : peak[0] + 9, max(0, peak[1] - 8) : peak[1] + 9].any()
