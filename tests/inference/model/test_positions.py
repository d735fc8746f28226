import numpy as np
import pytest

from inference.model.positions import (
    NO_ANOMALY,
    answer_text,
    distinct,
    grid_position,
    region_positions,
)


@pytest.mark.parametrize(
    ("row", "col", "word"),
    [(0, 0, "top left"), (10, 110, "top"), (5, 220, "top right"), (112, 3, "left"),
     (112, 112, "center"), (100, 200, "right"), (223, 0, "bottom left"), (200, 112, "bottom"),
     (223, 223, "bottom right")],
)
def test_grid_words(row, col, word):
    assert grid_position(row, col, 224, 224) == word


def test_regions_ordered_by_area_and_small_ones_dropped():
    mask = np.zeros((90, 90), bool)
    mask[60:85, 60:85] = True  # big, bottom right
    mask[5:10, 5:10] = True  # small, top left
    mask[40:41, 40:41] = True  # one pixel, center
    assert region_positions(mask, min_area=4) == ["bottom right", "top left"]
    assert region_positions(np.zeros((9, 9), bool)) == []


def test_answers_use_anomalygpt_wording():
    assert answer_text(False, []) == NO_ANOMALY == "No, there is no anomaly in the image."
    assert answer_text(True, ["top left"]) == (
        "Yes, there is an anomaly in the image, at the top left of the image.")
    assert answer_text(True, ["top", "right"]) == (
        "Yes, there are 2 anomalies in the image, they are at the top and right of the image.")
    assert answer_text(True, distinct(["top", "top"]), regions=2) == (
        "Yes, there are 2 anomalies in the image, they are at the top of the image.")
