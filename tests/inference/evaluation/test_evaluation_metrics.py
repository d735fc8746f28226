"""ROC AUC against brute-force pair counting and the rank-sum formula."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import rankdata

from inference.evaluation import metrics
from inference.evaluation.metrics import roc_auc


def _brute_force_auc(labels: np.ndarray, scores: np.ndarray) -> Fraction:
    """Count every (positive, negative) pair: 1 if the positive is higher, 1/2 if tied."""
    positives, negatives = scores[labels], scores[~labels]
    wins = sum(int((p > negatives).sum()) for p in positives)
    ties = sum(int((p == negatives).sum()) for p in positives)
    return Fraction(2 * wins + ties, 2 * positives.size * negatives.size)


@pytest.mark.parametrize("seed", range(8))
def test_matches_brute_force_pair_counting_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[:2] = [True, False]  # both classes present
    scores = rng.integers(0, 6, n).astype(np.float32)  # few distinct values: many ties
    expected = float(_brute_force_auc(labels, scores))
    assert roc_auc(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_matches_rank_sum_formula_on_a_larger_map() -> None:
    rng = np.random.default_rng(1)
    labels = rng.random((16, 256, 256)) < 0.03
    scores = np.round(rng.normal(size=labels.shape) + labels, 1).astype(np.float32)  # ties
    ranks = rankdata(scores.ravel())  # average ranks for ties
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    u = ranks[labels.ravel()].sum() - n_pos * (n_pos + 1) / 2
    assert roc_auc(labels, scores) == pytest.approx(u / (n_pos * n_neg), abs=1e-9)


def test_chunked_search_gives_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    labels = rng.random(5000) < 0.5
    scores = rng.integers(0, 50, 5000).astype(np.float32)
    expected = roc_auc(labels, scores)
    monkeypatch.setattr(metrics, "_CHUNK", 7)
    assert roc_auc(labels, scores) == expected


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.9], 1.0),  # perfect
        ([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.9], 0.0),  # reversed
        ([0, 1, 0, 1, 1], [0.5, 0.5, 0.5, 0.5, 0.5], 0.5),  # all tied
        ([0, 1], [0.5, 0.5], 0.5),
        ([0, 0, 1], [0.1, 0.3, 0.2], 0.5),
    ],
)
def test_known_cases(labels: list[int], scores: list[float], expected: float) -> None:
    assert roc_auc(np.array(labels), np.array(scores, dtype=np.float32)) == expected


def test_accepts_bool_labels_and_maps_of_any_shape() -> None:
    labels = np.zeros((2, 4, 4), dtype=bool)
    labels[:, 0, 0] = True
    scores = np.zeros((2, 4, 4), dtype=np.float32)
    scores[:, 0, 0] = 1.0
    assert roc_auc(labels, scores) == 1.0


@pytest.mark.parametrize("value", [0, 1])
def test_one_class_raises(value: int) -> None:
    with pytest.raises(ValueError, match="needs both classes"):
        roc_auc(np.full(10, value), np.linspace(0, 1, 10))


def test_rejects_nan_scores() -> None:
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.array([0, 1]), np.array([np.nan, 1.0]))


def test_rejects_size_mismatch() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        roc_auc(np.array([0, 1, 1]), np.array([0.1, 0.2]))


def test_rejects_labels_other_than_zero_and_one() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        roc_auc(np.array([0, 2]), np.array([0.1, 0.2]))


# -- bootstrap intervals ----------------------------------------------------------------------
def _separable(n_pos: int, n_neg: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    return labels, rng.normal(size=n_pos + n_neg) + shift * labels


def test_interval_holds_the_estimate_and_shrinks_with_more_images() -> None:
    small = _separable(36, 60, 1.0, seed=1)
    large = _separable(360, 600, 1.0, seed=1)
    for labels, scores in (small, large):
        low, high = metrics.auroc_interval(labels, scores)
        assert low < roc_auc(labels, scores) < high
    width_small = np.subtract(*metrics.auroc_interval(*small)[::-1])
    width_large = np.subtract(*metrics.auroc_interval(*large)[::-1])
    # The AUROC's standard error falls as 1/sqrt(n): ten times the images, ~1/3 the width.
    assert 0.2 < width_large / width_small < 0.5
    # 36 defective and 60 normal images, d' = 1 (AUROC ~0.76): an interval ~0.2 wide.
    assert 0.12 < width_small < 0.3


def test_interval_is_a_function_of_the_seed() -> None:
    labels, scores = _separable(20, 30, 0.5, seed=2)
    assert metrics.auroc_interval(labels, scores, seed=5) == metrics.auroc_interval(
        labels, scores, seed=5)
    assert metrics.auroc_interval(labels, scores, seed=5) != metrics.auroc_interval(
        labels, scores, seed=6)


def test_perfect_separation_has_no_spread() -> None:
    labels = np.array([1, 1, 0, 0, 0], bool)
    assert metrics.auroc_interval(labels, np.array([5.0, 4, 1, 2, 3])) == (1.0, 1.0)


def test_paired_difference_of_a_run_with_itself_is_exactly_zero() -> None:
    labels, scores = _separable(36, 60, 0.7, seed=3)
    assert metrics.auroc_difference_interval(labels, scores, scores) == (0.0, 0.0, 0.0)


def test_paired_difference_sees_a_change_the_separate_intervals_cannot() -> None:
    # The second run ranks the same images almost as the first, but moves the five hardest
    # defective images up: the two AUROCs' own intervals overlap, the paired one excludes 0.
    labels, first = _separable(36, 60, 1.0, seed=4)
    second = first.copy()
    hardest = np.flatnonzero(labels)[np.argsort(first[labels])[:5]]
    second[hardest] += 3.0
    difference, low, high = metrics.auroc_difference_interval(labels, first, second)
    assert difference == pytest.approx(roc_auc(labels, second) - roc_auc(labels, first))
    assert 0 < low < difference < high
    first_low, first_high = metrics.auroc_interval(labels, first)
    second_low, _ = metrics.auroc_interval(labels, second)
    assert second_low < first_high  # overlapping on their own
    # Reversed, the same change is a loss beyond noise.
    assert metrics.auroc_difference_interval(labels, second, first)[2] < 0


def test_intervals_refuse_one_class_and_bad_levels() -> None:
    with pytest.raises(ValueError, match="both classes"):
        metrics.auroc_interval(np.zeros(4, bool), np.arange(4.0))
    with pytest.raises(ValueError, match="level"):
        metrics.auroc_interval(np.array([1, 0], bool), np.array([1.0, 0.0]), level=1.5)
