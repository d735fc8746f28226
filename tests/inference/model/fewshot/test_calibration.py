import numpy as np
import pytest
import torch
from scipy import stats

from inference.model.fewshot.calibration import (
    MAX_COPIED_REFERENCES,
    MIN_LEAVE_ONE_OUT,
    calibration_method,
    combined_units,
    copied_references,
    interior_max,
    quarter_patch_shifts,
    threshold_from_normal_scores,
)


def test_threshold_is_the_student_t_prediction_bound():
    scores = np.array([0.20, 0.22, 0.25, 0.21])
    logs = np.log(scores)
    expected = np.exp(logs.mean() + stats.t.ppf(0.99, 3) * logs.std(ddof=1) * np.sqrt(1 + 1 / 4))
    calibration = threshold_from_normal_scores(scores, false_alarm_rate=0.01)
    assert calibration.threshold == pytest.approx(expected)
    assert calibration.threshold > scores.max()


def test_small_pools_and_noisy_products_get_wider_bands():
    rng = np.random.default_rng(0)
    few = threshold_from_normal_scores(np.array([0.2, 0.21, 0.22]))
    many = threshold_from_normal_scores(np.linspace(0.2, 0.22, 30))
    noisy = threshold_from_normal_scores(np.array([0.15, 0.21, 0.27]))
    assert few.threshold > many.threshold
    assert noisy.threshold > few.threshold
    # A stricter false-alarm target gives a higher threshold.
    scores = rng.normal(0.3, 0.02, size=8)
    assert (threshold_from_normal_scores(scores, false_alarm_rate=0.001).threshold
            > threshold_from_normal_scores(scores, false_alarm_rate=0.05).threshold)


def test_false_alarm_rate_holds_on_simulated_normals():
    # The bound is built for exactly this: how often does one more normal exceed it?
    rng = np.random.default_rng(1)
    exceed = 0
    trials = 4000
    for _ in range(trials):
        sample = rng.lognormal(-1.5, 0.2, size=5)
        threshold = threshold_from_normal_scores(sample, false_alarm_rate=0.05).threshold
        exceed += rng.lognormal(-1.5, 0.2) > threshold
    assert exceed / trials == pytest.approx(0.05, abs=0.015)


@pytest.mark.parametrize(
    ("scores", "message"),
    [(np.array([]), "at least two"), (np.array([0.3]), "at least two"),
     (np.array([0.3, 0.0]), "positive")],
)
def test_invalid_scores_are_an_error(scores, message):
    with pytest.raises(ValueError, match=message):
        threshold_from_normal_scores(scores)


def test_calibration_method_by_pool_size():
    assert calibration_method(1) == "shifted-self"
    assert calibration_method(2) == "leave-one-out+shifts"
    assert calibration_method(MIN_LEAVE_ONE_OUT - 1) == "leave-one-out+shifts"
    assert calibration_method(MIN_LEAVE_ONE_OUT) == "leave-one-out"


def test_quarter_patch_shifts_are_eight_rolled_copies_per_image():
    pixels = torch.arange(2 * 3 * 28 * 28, dtype=torch.float32).view(2, 3, 28, 28)
    copies = quarter_patch_shifts(pixels, patch_size=14)
    assert copies.shape == (16, 3, 28, 28)
    shifts = [(dy, dx) for dy in (-3, 0, 3) for dx in (-3, 0, 3) if (dy, dx) != (0, 0)]
    for image in range(2):
        for index, shift in enumerate(shifts):
            expected = torch.roll(pixels[image], shifts=shift, dims=(1, 2))
            assert torch.equal(copies[8 * image + index], expected)


def test_interior_max_ignores_the_wrapped_border():
    maps = torch.zeros(2, 10, 10)
    maps[0, 0, 5] = 9.0  # in the border strip: ignored
    maps[0, 4, 4] = 1.0
    maps[1, 5, 5] = 2.0
    np.testing.assert_allclose(interior_max(maps, border=2), [1.0, 2.0])


def test_copies_of_at_most_a_few_references_at_every_pool_size():
    assert copied_references(2, every_size=False) == 2
    assert copied_references(MIN_LEAVE_ONE_OUT, every_size=False) == 0
    assert copied_references(2, every_size=True) == 2
    assert copied_references(50, every_size=True) == MAX_COPIED_REFERENCES


def test_combined_units_keep_the_order_of_images_below_the_threshold():
    # Two parts (m = 2): local tail probabilities above 1/2 must not tie (the global part's
    # probability is 1 where it is not significant).
    local = np.array([0.9, 0.7, 0.55, 0.2, 0.004, 0.001])
    units = combined_units([local, np.ones_like(local)], 0.01)
    assert np.all(np.diff(units) > 0)
    assert units[4] > 1.0 > units[3]  # flagged exactly where 2 * p < alpha
    assert units[0] == pytest.approx(np.log(1.8) / np.log(0.01))
    assert np.all(combined_units([local], 0.01)[:4] < 1.0)
