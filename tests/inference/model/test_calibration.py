import numpy as np
import pytest

from inference.model.calibration import threshold_from_normal_scores


def test_threshold_sits_above_every_normal_score_scaled_by_their_spread():
    tight = threshold_from_normal_scores(np.array([0.30, 0.31, 0.32]), margin=0.5)
    wide = threshold_from_normal_scores(np.array([0.10, 0.20, 0.32]), margin=0.5)
    assert tight.threshold > 0.32
    assert wide.threshold > 0.32
    # The band scales with the product's own scores: multiply all scores, the threshold follows.
    scaled = threshold_from_normal_scores(np.array([0.60, 0.62, 0.64]), margin=0.5)
    assert scaled.threshold == pytest.approx(2 * tight.threshold)


def test_no_scores_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        threshold_from_normal_scores(np.array([]))
