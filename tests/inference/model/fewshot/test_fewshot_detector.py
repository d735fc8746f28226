"""FewShotDetector on the real DINOv2-S: how a product's threshold is calibrated."""

import numpy as np
import pytest
from PIL import Image

from inference.model.fewshot.calibration import MIN_LEAVE_ONE_OUT
from inference.model.fewshot.memory import memory_map

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nominal(textile_files) -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in textile_files["nominal"][:MIN_LEAVE_ONE_OUT]]


def test_small_pool_adds_shifted_copies_to_leave_one_out(cpu_detector, nominal, one_torch_thread):
    pair = nominal[:2]
    memory = cpu_detector.set_references("calibration-pair", pair)
    calibration = memory.calibration
    assert calibration.method == "leave-one-out+shifts"
    assert len(calibration.normal_scores) == 2 + 2 * 8
    cfg = cpu_detector.config
    taps = cpu_detector.features(cpu_detector.pixels(pair))
    for i in range(2):  # the first scores: each reference against the other one alone
        amap = memory_map([t[i : i + 1] for t in taps],
                            [bank[owner != i] for bank, owner in zip(memory.memory, memory.owners,
                                                                     strict=True)],
                            grid=cfg.grid, out_size=(cfg.image_size,) * 2, sigma=cfg.sigma)
        assert calibration.normal_scores[i] == pytest.approx(float(amap.max()), rel=1e-5)
    assert calibration.threshold >= max(calibration.normal_scores)


def test_large_pool_is_plain_leave_one_out(cpu_detector, nominal, one_torch_thread):
    memory = cpu_detector.set_references("calibration-pool", nominal)
    assert memory.calibration.method == "leave-one-out"
    assert len(memory.calibration.normal_scores) == len(nominal)


def test_one_reference_scores_its_shifted_copies(cpu_detector, nominal, one_torch_thread):
    memory = cpu_detector.set_references("calibration-one", nominal[:1])
    scores = np.asarray(memory.calibration.normal_scores)
    assert memory.calibration.method == "shifted-self"
    assert scores.shape == (8,)
    assert np.all(scores > 0)
