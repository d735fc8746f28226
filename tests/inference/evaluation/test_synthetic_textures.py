"""The synthetic texture set: readable as MVTec-AD, honest masks, deterministic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.evaluation import mvtec
from inference.evaluation.synthetic import (
    DEFAULT_CATEGORIES,
    DEFAULT_COUNTS,
    DEFECT_KINDS,
    GENERATOR_VERSION,
    OBJECT_CATEGORIES,
    build_textures_set,
    defect_kinds,
    render_category,
)

SMALL = {"n_train": 3, "n_test_good": 2, "n_test_defect": 12}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_textures_set(tmp_path_factory.mktemp("textures"), seed=3, **SMALL)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_is_readable_by_the_mvtec_reader(dataset: Path) -> None:
    assert mvtec.list_categories(dataset) == sorted(DEFAULT_CATEGORIES)
    for category in DEFAULT_CATEGORIES:
        references = mvtec.reference_paths(dataset, category, 2)
        assert [p.name for p in references] == ["000.png", "001.png"]
        items = mvtec.test_items(dataset, category)
        assert len(items) == SMALL["n_test_good"] + SMALL["n_test_defect"]
        assert {i.defect_type for i in items if i.anomalous} == set(defect_kinds(category))
        assert all(i.mask_path is None for i in items if not i.anomalous)


def test_every_defect_has_a_binary_nonempty_mask_of_the_image_size(dataset: Path) -> None:
    for category in DEFAULT_CATEGORIES:
        for item in mvtec.test_items(dataset, category):
            with Image.open(item.path) as image:
                assert image.mode == "RGB"
                size = image.size
            assert size == (224, 224)
            if not item.anomalous:
                continue
            with Image.open(item.mask_path) as mask_image:
                assert mask_image.size == size
                values = set(np.unique(np.asarray(mask_image)).tolist())
            assert values == {0, 255}
            assert mvtec.load_mask(item.mask_path, size).sum() > 0


def test_written_masks_equal_the_rendered_ones(dataset: Path) -> None:
    samples = render_category("gravel", seed=3, **SMALL)
    items = [i for i in mvtec.test_items(dataset, "gravel") if i.anomalous]
    by_kind: dict[str, list] = {}
    for defect in samples.defects:  # two per kind with n_test_defect=12, in file order
        by_kind.setdefault(defect.kind, []).append(defect)
    for item in items:
        rendered = by_kind[item.defect_type][int(item.path.stem)]
        np.testing.assert_array_equal(mvtec.load_mask(item.mask_path, (224, 224)), rendered.mask)
        np.testing.assert_array_equal(np.asarray(Image.open(item.path)), rendered.image)


@pytest.mark.parametrize("category", DEFAULT_CATEGORIES)
def test_masks_cover_the_changed_pixels(category: str) -> None:
    samples = render_category(category, seed=5, n_train=0, n_test_good=0, n_test_defect=12)
    kinds = list(defect_kinds(category))
    assert [d.kind for d in samples.defects] == kinds * (12 // len(kinds))
    for defect in samples.defects:
        change = np.abs(defect.image.astype(np.float32) - defect.clean).max(axis=2)
        inside, outside = change[defect.mask], change[~defect.mask]
        assert inside.mean() > 10 * outside.mean(), defect.kind
        assert (outside > 10).mean() < 0.01, defect.kind  # soft edges only, nothing missed
        assert inside.mean() >= 6, defect.kind  # not invisible noise


def test_cutpaste_is_half_plain_half_poisson_blended() -> None:
    samples = render_category("brick", seed=0, n_train=0, n_test_good=0, n_test_defect=24)
    blends = [d.params["blend"] for d in samples.defects if d.kind == "cutpaste"]
    assert blends == ["paste", "seamlessClone"] * 2


@pytest.mark.parametrize("category", DEFAULT_CATEGORIES)
def test_images_of_a_category_are_distinct(category: str) -> None:
    samples = render_category(category, seed=1, **SMALL)
    clean = [*samples.train, *samples.good, *(d.clean for d in samples.defects)]
    assert len({image.tobytes() for image in clean}) == len(clean)
    sources = [*samples.train_sources, *samples.good_sources, *(d.source for d in samples.defects)]
    assert len(set(sources)) == len(sources)


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    first = build_textures_set(tmp_path / "a", categories=("grass", "textile"), seed=7, **SMALL)
    second = build_textures_set(tmp_path / "b", categories=("grass", "textile"), seed=7, **SMALL)
    assert _digests(first) == _digests(second)


def test_different_seeds_differ(tmp_path: Path) -> None:
    first = _digests(build_textures_set(tmp_path / "a", categories=("brick",), seed=1, **SMALL))
    second = _digests(build_textures_set(tmp_path / "b", categories=("brick",), seed=2, **SMALL))
    assert first.keys() == second.keys()
    tests = [k for k in first if k.startswith("brick/test/")]
    assert all(first[k] != second[k] for k in tests)
    # References are drawn from 80 crops (20 offsets x 4 flips); a coincidence is possible.
    train = [k for k in first if k.startswith("brick/train/")]
    assert any(first[k] != second[k] for k in train)


def test_manifest_describes_the_set(dataset: Path) -> None:
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["version"] == GENERATOR_VERSION
    assert manifest["seed"] == 3
    assert set(manifest["categories"]) == set(DEFAULT_CATEGORIES)
    textile = manifest["categories"]["textile"]
    assert len(textile["train"]) == SMALL["n_train"]
    defects = [entry for entry in textile["test"] if "mask" in entry]
    assert {entry["file"].split("/")[2] for entry in defects} == set(DEFECT_KINDS)
    assert all((dataset / entry["mask"]).is_file() for entry in defects)
    assert all(entry["source"].startswith("conformal_clip_data nominal/") for entry in defects)
    assert (dataset / "README.txt").read_text().startswith("Synthetic MVTec-AD-layout")


@pytest.mark.parametrize("category", OBJECT_CATEGORIES)
def test_objects_lie_in_random_pose(category: str) -> None:
    samples = render_category(category, seed=2, n_train=2, n_test_good=6, n_test_defect=4)
    angles = [d.params["pose"]["angle"] for d in samples.defects]
    assert len(set(angles)) == len(angles)
    assert max(angles) - min(angles) > 30  # spread over the circle, not one pose
    # The same part, not a copy: normal images differ beyond sensor noise.
    first, second = (image.astype(np.float32) for image in samples.good[:2])
    assert np.abs(first - second).mean() > 5


def test_existing_category_is_not_overwritten_by_accident(tmp_path: Path) -> None:
    build_textures_set(tmp_path, categories=("brick",), **SMALL)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        build_textures_set(tmp_path, categories=("brick",), **SMALL)
    build_textures_set(tmp_path, categories=("brick",), overwrite=True, n_train=1, n_test_good=1)
    assert len(mvtec.reference_paths(tmp_path, "brick", 1)) == 1
    with pytest.raises(ValueError, match="fewer than the 2 shots"):
        mvtec.reference_paths(tmp_path, "brick", 2)


def test_references_never_share_pixels_with_test_crops() -> None:
    samples = render_category("gravel", seed=0, n_train=6, n_test_good=6, n_test_defect=6)
    rows = [
        int(source.split(" y=")[1].split()[0])
        for source in [*samples.train_sources, *samples.good_sources]
    ]
    crop = 208
    assert all(y + crop <= 208 for y in rows[:6])  # references: the top band
    assert all(y >= 208 for y in rows[6:])  # test crops: below it


def test_unknown_category_raises_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown category 'carpet'"):
        render_category("carpet")
    with pytest.raises(ValueError, match="unknown categories"):
        build_textures_set(tmp_path, categories=("brick", "carpet"))
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_default_set_has_enough_normals_to_measure_false_alarms(tmp_path: Path) -> None:
    root = build_textures_set(tmp_path)
    for category in DEFAULT_CATEGORIES:
        items = mvtec.test_items(root, category)
        assert sum(not i.anomalous for i in items) == DEFAULT_COUNTS["n_test_good"] >= 50
        assert sum(i.anomalous for i in items) == DEFAULT_COUNTS["n_test_defect"]
        assert len(mvtec.reference_paths(root, category, 8)) == 8
