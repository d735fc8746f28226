"""Simulated anomalies: exact masks inside the pasted region, seeded, AnomalyGPT's answers."""

from __future__ import annotations

import numpy as np
import pytest

from inference.model.positions import NO_ANOMALY
from inference.train.datasets import load_image
from inference.train.simulation import (
    KINDS,
    MIN_AREA,
    NSA_MASK_LEVEL,
    answer_for_mask,
    perlin_noise,
    simulate,
)


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    return {
        "image": load_image("skimage:astronaut", 224).copy(),
        "donor": load_image("skimage:chelsea", 224).copy(),
        "foreign": load_image("skimage:coffee", 224).copy(),
    }


def _change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=2)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_mask_is_exactly_what_changed_inside_the_pasted_region(images, kind, seed):
    image = images["image"]
    result = simulate(kind, image, donor=images["donor"], foreign=images["foreign"],
                      rng=np.random.default_rng(seed))
    change = _change(result.image, image)
    assert result.kind == kind
    assert result.mask.sum() >= MIN_AREA
    assert not (result.mask & ~result.region).any()  # the mask lies in the pasted region
    assert not change[~result.region].any()  # nothing outside the region changed
    if kind == "nsa":  # Poisson blending: the spec's normalised difference above 0.3
        inside = change * result.region
        np.testing.assert_array_equal(result.mask,
                                      result.region & (inside / inside.max() > NSA_MASK_LEVEL))
    elif kind == "cutpaste":
        np.testing.assert_array_equal(result.mask, result.region & (change > 8))
    else:  # scar stroke, texture blob: every changed pixel of the region, and only those
        np.testing.assert_array_equal(result.mask, result.region & (change > 0))
        assert result.mask.sum() >= 0.95 * result.region.sum()


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_seed_draws_the_same_anomaly(images, kind):
    draws = [simulate(kind, images["image"], donor=images["donor"], foreign=images["foreign"],
                      rng=np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(draws[0].image, draws[1].image)
    np.testing.assert_array_equal(draws[0].mask, draws[1].mask)
    other = simulate(kind, images["image"], donor=images["donor"], foreign=images["foreign"],
                     rng=np.random.default_rng(8))
    assert not np.array_equal(other.mask, draws[0].mask)


def test_answers_follow_the_spec_wording():
    mask = np.zeros((224, 224), bool)
    assert answer_for_mask(mask) == NO_ANOMALY
    mask[10:40, 10:40] = True  # top left
    assert answer_for_mask(mask) == (
        "Yes, there is an anomaly in the image, at the top left of the image.")
    mask[180:220, 100:130] = True  # bottom, larger: named first
    assert answer_for_mask(mask) == ("Yes, there are 2 anomalies in the image, they are at the "
                                     "bottom and top left of the image.")
    # A blended patch whose changed pixels fall apart is still one anomaly of its region.
    region = np.zeros((224, 224), bool)
    region[10:60, 10:60] = True
    split = np.zeros((224, 224), bool)
    split[10:20, 10:60] = split[50:60, 10:60] = True
    assert answer_for_mask(split, region) == (
        "Yes, there is an anomaly in the image, at the top left of the image.")


def test_perlin_noise_is_smooth_and_seeded():
    a = perlin_noise((224, 224), (4, 8), np.random.default_rng(0))
    b = perlin_noise((224, 224), (4, 8), np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (224, 224)
    assert -1.5 < a.min() < 0 < a.max() < 1.5
    assert np.abs(np.diff(a, axis=0)).max() < 0.2  # no jumps between neighbours


def test_unknown_kind_and_mismatched_shapes_are_refused(images):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown anomaly kind"):
        simulate("smudge", images["image"], donor=images["donor"], foreign=images["foreign"],
                 rng=rng)
    with pytest.raises(ValueError, match="must match"):
        simulate("nsa", images["image"], donor=images["donor"][:100], foreign=images["foreign"],
                 rng=rng)
