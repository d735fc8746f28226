"""FewShotDetector on the real DINOv2-S: how a product's threshold is calibrated."""

import numpy as np
import pytest
from PIL import Image

from inference.model.fewshot.calibration import (
    MAX_COPIED_REFERENCES,
    MIN_LEAVE_ONE_OUT,
    threshold_from_normal_scores,
)
from inference.model.fewshot.memory import memory_map

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nominal(textile_files) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in textile_files["nominal"][:MIN_LEAVE_ONE_OUT]]


def copies_per_reference(detector) -> dict[str, int]:
    """Scores each copied reference adds to the calibration, per copy group."""
    return {"shifts": 8, "regions": 4 * 9,  # four halves, as they are and shifted
            "rotations": 360 // detector.config.rotation_step - 1}


def test_small_pool_adds_copies_to_leave_one_out(cpu_detector, nominal, one_torch_thread):
    pair = nominal[:2]
    memory = cpu_detector.set_references("calibration-pair", pair)
    calibration = memory.calibration
    group = calibration.method.removeprefix("leave-one-out+")
    assert group in copies_per_reference(cpu_detector)
    assert len(calibration.normal_scores) == 2 + 2 * copies_per_reference(cpu_detector)[group]
    cfg = cpu_detector.config
    taps = cpu_detector.features(cpu_detector.pixels(pair))
    for i in range(2):  # the first scores: each reference against the other one alone
        amap = memory_map([t[i : i + 1] for t in taps],
                            [bank[owner != i] for bank, owner in zip(memory.memory, memory.owners,
                                                                     strict=True)],
                            grid=cfg.grid, out_size=(cfg.image_size,) * 2, sigma=cfg.sigma)
        assert calibration.normal_scores[i] == pytest.approx(float(amap.max()), rel=1e-5)
    assert calibration.threshold >= max(calibration.normal_scores)


def test_large_pool_keeps_the_copy_groups_of_a_few_references(cpu_detector, textile_files,
                                                                one_torch_thread):
    # Leave-one-out among references of one session cannot see what they share; the copies
    # (shifts, halves, half-step rotations) of the first MAX_COPIED_REFERENCES still count.
    pool = [Image.open(p).convert("RGB")
            for p in textile_files["nominal"][:MAX_COPIED_REFERENCES + 1]]
    memory = cpu_detector.set_references("calibration-pool", pool)
    calibration = memory.calibration
    group = calibration.method.removeprefix("leave-one-out+")
    assert group in copies_per_reference(cpu_detector)
    assert len(calibration.normal_scores) == len(pool) + MAX_COPIED_REFERENCES * (
        copies_per_reference(cpu_detector)[group])
    loo_alone = threshold_from_normal_scores(
        np.asarray(calibration.normal_scores[: len(pool)]),
        false_alarm_rate=calibration.false_alarm_rate)
    assert calibration.threshold >= max(calibration.normal_scores)
    assert calibration.threshold != pytest.approx(loo_alone.threshold)


def test_one_reference_scores_its_copies(cpu_detector, nominal, one_torch_thread):
    memory = cpu_detector.set_references("calibration-one", nominal[:1])
    scores = np.asarray(memory.calibration.normal_scores)
    names = {"shifted-self": "shifts", "rotated-self": "rotations", "regions": "regions"}
    assert memory.calibration.method in names
    assert scores.shape == (copies_per_reference(cpu_detector)[
        names[memory.calibration.method]],)
    assert np.all(scores > 0)


@pytest.mark.parametrize("shots", [1, 4])
def test_threshold_holds_on_normal_crops_from_another_band_of_the_photo(
        cpu_detector, tmp_path, one_torch_thread, shots):
    # References from the top band of a real brick photo, normal test crops from the rest:
    # what a line shows after references taken in one session. On `agpt data synth --seed 0`
    # leave-one-out alone flagged 6.7 % of such crops at 4 references, shifted copies without
    # their seams 23 % at 1 reference and 15 % at 4. The configured 1 % must hold near (at
    # most 2 of 60), pool alone.
    from dataclasses import replace

    from inference.evaluation.mvtec import reference_paths, test_items
    from inference.evaluation.synthetic import build_textures_set
    from inference.model.fewshot.fewshot_detector import FewShotDetector

    root = build_textures_set(tmp_path / "synth", categories=("brick",), seed=5, n_train=4,
                              n_test_good=60, n_test_defect=6)
    detector = FewShotDetector(cpu_detector.extractor,
                               replace(cpu_detector.config, stream_window=0))
    references = [Image.open(p).convert("RGB") for p in reference_paths(root, "brick", shots)]
    detector.set_references("brick-band", references)
    normals = [Image.open(item.path).convert("RGB") for item in test_items(root, "brick")
               if not item.anomalous]
    flagged = sum(d.anomalous for start in range(0, len(normals), 12)
                  for d in detector.detect("brick-band", normals[start:start + 12]))
    assert len(normals) == 60
    assert flagged <= 2
