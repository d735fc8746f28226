"""Procedural stochastic textures: seeded realisations of a family, as training products."""

from __future__ import annotations

import numpy as np
import pytest

from inference.train.datasets import (
    EVALUATION_SOURCES,
    DatasetError,
    load_image,
    texture_products,
)
from inference.train.samples import SampleSource
from inference.train.textures import FAMILIES, PREFIX, REALISATIONS, render


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_realisation_is_a_pure_function_of_its_name(family):
    first = render(f"{PREFIX}{family}:3")
    assert first.shape == (256, 256, 3)
    assert first.dtype == np.uint8
    np.testing.assert_array_equal(first, render(f"{PREFIX}{family}:3"))
    other = render(f"{PREFIX}{family}:4")
    assert np.abs(first.astype(int) - other).mean() > 5  # another patch of the process
    assert first.std() > 10  # a texture, not a flat colour


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_family_fixes_the_palette_across_realisations(family):
    means = np.array([render(f"{PREFIX}{family}:{i}").reshape(-1, 3).mean(0)
                      for i in range(3)])
    assert np.abs(means - means.mean(0)).max() < 20  # grey levels per channel


def test_texture_products_are_file_products_of_every_family():
    products = texture_products()
    assert [p.name for p in products] == [f"{f} texture" for f in FAMILIES]
    assert all(len(p.images) == REALISATIONS and not p.crop for p in products)
    assert not {i for p in products for i in p.images} & EVALUATION_SOURCES
    image = load_image(products[0].images[0], 224)
    assert image.shape == (224, 224, 3)
    assert not image.flags.writeable
    with pytest.raises(DatasetError, match="unknown texture families"):
        texture_products(["grass"])
    with pytest.raises(ValueError, match="procedural"):
        render(f"{PREFIX}grass:0")


def test_a_texture_pools_normals_are_other_realisations_than_its_references():
    source = SampleSource(texture_products(["noise", "cells"]), seed=0, shots=[1],
                          pools_per_product=1, anomaly_ratio=0.0)
    for index in range(4):
        sample = source.sample(index)
        (reference,) = source.pool(sample.pool).references
        assert sample.kind == "normal"
        assert not np.array_equal(sample.image, reference)
