"""Position-word accuracy: does the answer name where the defect is?

For each defective test image the detector's answer (the LLM's sentence on profiles with an
LLM, the map's regions otherwise) is compared with the 3×3 grid words of the ground-truth
mask's regions (`positions.region_positions`, regions of at least `MIN_REGION` pixels at the
model's input size). An image counts as right when it is judged anomalous and the first
position named is one of the mask's; a "No" counts as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from inference.evaluation.mvtec import TestItem, load_mask
from inference.model.interface import Detector
from inference.model.positions import region_positions

MIN_REGION = 16  # pixels at the input size, as the detectors' min_region_area


@dataclass(frozen=True)
class PositionResult:
    """Position-word accuracy of one category's defective images."""

    accuracy: float  # right / defective images
    flagged: int  # defective images judged anomalous
    right: int
    n_defects: int
    answers: dict[str, str]  # image name -> the answer text


def position_accuracy(detector: Detector, category: str, items: Sequence[TestItem], *,
                      batch_size: int = 8) -> PositionResult:
    """Answers for the defective `items` and how many name a right position.

    The product's references must already be set (`detector.set_references`).
    """
    defects = [item for item in items if item.anomalous]
    size = detector.config.image_size
    right = flagged = 0
    answers: dict[str, str] = {}
    for start in range(0, len(defects), batch_size):
        chunk = defects[start : start + batch_size]
        images = [Image.open(item.path).convert("RGB") for item in chunk]
        for item, detection in zip(chunk, detector.detect(category, images), strict=True):
            truth = set(region_positions(load_mask(item.mask_path, (size, size)),
                                         min_area=MIN_REGION))
            answers[f"{item.defect_type}/{item.path.name}"] = detection.text
            if detection.anomalous:
                flagged += 1
                right += bool(detection.positions) and detection.positions[0] in truth
    n = len(defects)
    return PositionResult(right / n if n else float("nan"), flagged, right, n, answers)
