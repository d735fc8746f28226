"""Training data layouts (small sets written here), the wheel photos and the evaluation's
held-out sources, seeded samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from inference.evaluation import synthetic
from inference.model.positions import NO_ANOMALY
from inference.train.datasets import (
    EVALUATION_SOURCES,
    WHEEL_IMAGES,
    DatasetError,
    crackforest_products,
    folder_products,
    load_conversations,
    mvtec_products,
    visa_products,
    wheel_products,
)
from inference.train.samples import SampleSource


def _png(path: Path, value: int = 128, size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def test_mvtec_and_loco_layouts_give_train_good_images(tmp_path):
    for i in range(3):
        _png(tmp_path / "metal_nut" / "train" / "good" / f"{i:03}.png", i)
    _png(tmp_path / "metal_nut" / "test" / "scratch" / "000.png")
    (tmp_path / "not_a_category").mkdir()
    (product,) = mvtec_products(tmp_path)
    assert product.name == "metal nut"
    assert len(product.images) == 3
    assert all("/train/good/" in p for p in product.images)
    with pytest.raises(DatasetError, match="train/good"):
        mvtec_products(tmp_path, ["bottle"])


def test_visa_reads_the_normal_training_rows_of_its_split_csv(tmp_path):
    rows = ["object,split,label,image,mask"]
    for i, (split, label) in enumerate([("train", "normal"), ("train", "normal"),
                                        ("test", "normal"), ("train", "anomaly")]):
        _png(tmp_path / "candle" / "Data" / "Images" / f"{i}.JPG", i)
        rows.append(f"candle,{split},{label},candle/Data/Images/{i}.JPG,")
    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    (product,) = visa_products(tmp_path)
    assert [Path(p).name for p in product.images] == ["0.JPG", "1.JPG"]
    with pytest.raises(DatasetError, match="split CSV"):
        visa_products(tmp_path / "elsewhere")


def test_crackforest_images_are_real_defects_with_their_masks(tmp_path):
    _png(tmp_path / "image" / "001.jpg", 1, size=48)
    segmentation = np.ones((48, 48), np.uint8)
    segmentation[20:24, 5:40] = 2  # the crack
    (tmp_path / "groundTruth").mkdir()
    savemat(tmp_path / "groundTruth" / "001.mat",
            {"groundTruth": {"Segmentation": segmentation,  # a 1×1 struct, as CrackForest's
                             "Boundaries": np.zeros_like(segmentation)}})
    (product,) = crackforest_products(tmp_path)
    image, mask = product.defect(np.random.default_rng(0), 48)
    assert image.shape == (48, 48, 3)
    np.testing.assert_array_equal(mask, segmentation == 2)
    source = SampleSource([product], seed=0, anomaly_ratio=1.0, real_ratio=1.0,
                          kinds=("scar",))
    sample = source.sample(0)
    assert sample.kind == "real"
    assert sample.mask.any()
    assert sample.answer.startswith("Yes")
    _png(tmp_path / "image" / "002.jpg", 2)
    with pytest.raises(DatasetError, match="002"):
        crackforest_products(tmp_path)


def test_a_custom_product_folder_needs_only_good(tmp_path):
    _png(tmp_path / "widget" / "good" / "a.png")
    assert [p.name for p in folder_products(tmp_path / "widget")] == ["widget"]
    assert [p.name for p in folder_products(tmp_path)] == ["widget"]
    with pytest.raises(DatasetError, match="good/"):
        folder_products(tmp_path / "widget" / "good")


def test_pandagpt_conversations(tmp_path):
    _png(tmp_path / "images" / "x.jpg")
    data = [{"image_name": "x.jpg", "conversation": [
        {"from": "human", "value": "<Img>What is shown?"}, {"from": "gpt", "value": "A cat."},
        {"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Grey."}]}]
    (tmp_path / "c.json").write_text(json.dumps(data))
    (dialogue,) = load_conversations(tmp_path / "c.json", tmp_path / "images")
    assert dialogue.turns == (("What is shown?", "A cat."), ("Colour?", "Grey."))
    data[0]["image_name"] = "missing.jpg"
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="not found"):
        load_conversations(tmp_path / "c.json", tmp_path / "images")


def test_the_evaluation_sets_sources_are_never_wheel_training_images():
    # Every texture `agpt data synth` photographs is held out, and training refuses it.
    synth = {f"skimage:{name}" for name in synthetic._SKIMAGE_TEXTURES}
    assert synth | {"conformal_clip_data:textile"} <= EVALUATION_SOURCES
    assert not {f"skimage:{name}" for name in WHEEL_IMAGES} & EVALUATION_SOURCES
    with pytest.raises(DatasetError, match="evaluation set"):
        wheel_products(["brick"])


def test_samples_are_a_pure_function_of_seed_and_index():
    products = wheel_products(("coins", "camera", "astronaut"))
    a, b = SampleSource(products, seed=1), SampleSource(products, seed=1)
    for index in (0, 5, 17):
        x, y = a.sample(index), b.sample(index)
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.mask, y.mask)
        assert x.answer == y.answer
    kinds = {a.sample(i).kind for i in range(40)}
    assert "normal" in kinds
    assert kinds & {"nsa", "cutpaste", "scar", "texture"}
    for i in range(40):
        sample = a.sample(i)
        assert (sample.answer == NO_ANOMALY) == (not sample.mask.any())
        assert sample.image.shape == sample.reference.shape == (224, 224, 3)


def test_pooled_samples_are_seeded_and_belong_to_their_pool():
    products = wheel_products(("coins", "camera", "astronaut"))
    a = SampleSource(products, seed=1, shots=(1, 4), pools_per_product=2)
    b = SampleSource(products, seed=1, shots=(1, 4), pools_per_product=2)
    keys = set()
    for index in range(24):
        x, y = a.sample(index), b.sample(index)
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.mask, y.mask)
        assert x.pool == y.pool
        keys.add(x.pool)
        pool = a.pool(x.pool)
        np.testing.assert_array_equal(x.reference, pool.references[0])
        assert (x.answer == NO_ANOMALY) == (not x.mask.any())
    assert len(keys) > 3
    sizes = {len(a.pool(key).references) for key in keys}
    assert sizes == {1, 4}
    for key in keys:
        for reference in a.pool(key).references:
            assert reference.shape == (224, 224, 3)
            assert reference.std() >= 12.0  # never a flat window (sky, background)


def test_a_pool_window_seen_again_is_the_same_part_displaced():
    (product,) = wheel_products(("coins",))
    pool = product.pool(np.random.default_rng(0), 2, 224)
    assert pool.window is not None
    first, second = pool.references
    again = pool.normal(np.random.default_rng(1), 224, turn=0.0)
    other = wheel_products(("camera",))[0].pool(np.random.default_rng(0), 1, 224)
    # Displaced views of one window differ far less from each other than from another photo.
    def distance(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.abs(x.astype(float) - y.astype(float)).mean())
    assert distance(first, again) < distance(first, other.references[0])
    assert distance(first, second) < distance(first, other.references[0])
    assert not np.array_equal(first, again)


def test_file_products_pool_references_apart_from_their_normals(tmp_path):
    for i in range(5):
        _png(tmp_path / "part" / "good" / f"{i}.png", value=i)
    (product,) = folder_products(tmp_path / "part")
    pool = product.pool(np.random.default_rng(0), 2, 32)
    assert len(pool.references) == 2
    assert len(pool.normals) == 3
    assert not set(pool.normals) & {p for p in product.images
                                    if any(np.array_equal(r, np.asarray(Image.open(p)))
                                           for r in pool.references)}
