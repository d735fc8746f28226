"""The silhouette check on the real DINOv2-S detector: pools of parts, surfaces, poses."""

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from inference.evaluation.objects import draw_object
from inference.model.fewshot.fewshot_detector import SILHOUETTE_FLOOR, FewShotDetector
from inference.model.fewshot.pose import silhouette
from inference.model.fewshot.silhouette_check import (
    copied_whole,
    grey_levels,
    normal_scores,
    rotated_copies,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def detector(cpu_detector) -> FewShotDetector:
    return FewShotDetector(cpu_detector.extractor,
                           replace(cpu_detector.config, stream_window=0))


def gears(count: int, seed: int, kind: str | None = None) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(draw_object("gear", rng, kind=kind)[0]) for _ in range(count)]


def test_a_pool_of_parts_gets_the_check_and_no_halves(detector, one_torch_thread):
    memory = detector.set_references("gear", gears(1, seed=0))
    assert memory.silhouettes is not None
    assert memory.silhouette_calibration is not None
    assert memory.silhouette_calibration.threshold >= SILHOUETTE_FLOOR
    assert memory.calibration.method != "regions"  # the surface's halves group is not scored


def test_a_surface_gets_no_check(detector, textile_files, one_torch_thread):
    pool = [Image.open(p).convert("RGB") for p in textile_files["nominal"][:1]]
    memory = detector.set_references("textile-surface", pool)
    assert memory.silhouettes is None


def test_a_missing_piece_in_another_pose_is_flagged_and_normal_parts_are_not(
        detector, one_torch_thread):
    # A piece missing from the rim matches the gaps between teeth patch by patch; against
    # the posed reference's outline it is material that is not there.
    detector.set_references("gear-pose", gears(1, seed=0))
    normal = detector.detect("gear-pose", gears(6, seed=11))
    broken = detector.detect("gear-pose", gears(6, seed=12, kind="missing"))
    assert sum(d.anomalous for d in normal) == 0
    assert sum(d.anomalous for d in broken) >= 5
    assert min(d.score for d in broken) > max(d.score for d in normal)


def test_copies_of_a_reference_score_as_normal(detector):
    pixels = detector.pixels(gears(2, seed=3))
    grey = grey_levels(pixels, detector.config.mean, detector.config.std)
    references = [silhouette(image) for image in grey]
    assert all(ref is not None for ref in references)
    whole = [ref for ref in references if ref is not None]
    copied = copied_whole(whole, 2)
    scores = normal_scores(whole, rotated_copies(grey[copied], 30), copied)
    assert scores.shape == (2 + 12 * len(copied),)
    assert float(scores.max()) < SILHOUETTE_FLOOR
