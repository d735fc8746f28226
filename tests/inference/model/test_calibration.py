import numpy as np
import pytest
from scipy import stats

from inference.model.calibration import threshold_from_normal_scores


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
