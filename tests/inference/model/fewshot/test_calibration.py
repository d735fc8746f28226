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
    quarter_patch_shifts,
    score_units,
    seam_reach,
    shift_validity,
    tail_probability,
    threshold_from_normal_scores,
    valid_max,
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


def test_shift_validity_marks_the_pixels_that_did_not_wrap():
    pixels = torch.arange(28 * 28, dtype=torch.float32).view(1, 1, 28, 28)
    copies = quarter_patch_shifts(pixels, patch_size=14)
    valid = shift_validity(28, 28, patch_size=14)
    assert valid.shape == (8, 28, 28)
    rows, cols = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
    for copy, mask, (dy, dx) in zip(copies, valid, [(dy, dx) for dy in (-3, 0, 3)
                                                    for dx in (-3, 0, 3) if (dy, dx) != (0, 0)],
                                    strict=True):
        # A pixel is valid exactly when it holds its source pixel shifted by (dy, dx).
        source = (rows - dy) * 28 + (cols - dx)
        unwrapped = (rows - dy >= 0) & (rows - dy < 28) & (cols - dx >= 0) & (cols - dx < 28)
        assert torch.equal(mask, unwrapped)
        assert torch.equal(copy[0][mask], source[mask].float())
        assert (~mask).sum() == 28 * 28 - (28 - abs(dy)) * (28 - abs(dx))


def test_valid_max_leaves_out_the_pixels_near_a_seam():
    maps = torch.zeros(2, 40, 40)
    valid = torch.ones(2, 40, 40, dtype=torch.bool)
    valid[0, :3] = False  # a wrapped strip along the top
    maps[0, 8, 20] = 9.0  # within reach 6 of the strip: a seam artefact
    maps[0, 30, 30] = 1.0
    maps[1, 0, 0] = 2.0  # the image's own border is no seam
    np.testing.assert_allclose(valid_max(maps, valid, reach=6), [1.0, 2.0])
    # Nothing left that far from the seam (tiny maps): the valid pixels' maximum.
    np.testing.assert_allclose(valid_max(maps, valid, reach=40), [9.0, 2.0])


def test_seam_reach_covers_the_upsampled_patch_and_the_blur():
    assert seam_reach(14) == 21
    assert seam_reach(14, sigma=4.0) == 21 + 16


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


def test_score_units_are_the_one_part_image_score_with_the_threshold_at_one():
    rng = np.random.default_rng(4)
    calibration = threshold_from_normal_scores(rng.lognormal(0.0, 0.2, 40),
                                               false_alarm_rate=0.01)
    raw = np.linspace(0.2, 3.0, 50) * calibration.threshold
    units = score_units(calibration, raw.reshape(5, 10)).ravel()
    assert np.all(np.diff(units) > 0)  # monotone: the map's shape is kept
    assert score_units(calibration, np.array([calibration.threshold]))[0] == pytest.approx(1.0)
    p = tail_probability(calibration, raw)
    np.testing.assert_allclose(units, np.log(p) / np.log(0.01))
    assert score_units(calibration, raw[:1])[0] < 0.5  # a fifth of the threshold: p > 0.1
