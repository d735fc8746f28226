"""The MVTec-AD layout reader on small hand-made trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.evaluation import mvtec


def _png(path: Path, array: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), np.uint8) if array is None else array).save(path)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Two categories plus distractors; files created out of name order."""
    for name in ("010.png", "002.png", "001.png", "003.jpg"):
        _png(tmp_path / "screw" / "train" / "good" / name)
    (tmp_path / "screw" / "train" / "good" / "notes.txt").write_text("not an image")
    for name in ("001.png", "000.png"):
        _png(tmp_path / "screw" / "test" / "good" / name)
    for name in ("001.png", "000.png"):
        _png(tmp_path / "screw" / "test" / "scratch" / name)
        _png(tmp_path / "screw" / "ground_truth" / "scratch" / name.replace(".png", "_mask.png"))
    _png(tmp_path / "bottle" / "train" / "good" / "000.png")
    _png(tmp_path / "bottle" / "test" / "good" / "000.png")
    (tmp_path / "no_train" / "test" / "good").mkdir(parents=True)
    (tmp_path / "readme.txt").write_text("a file, not a category")
    return tmp_path


def test_list_categories_needs_train_good_and_sorts(root: Path) -> None:
    assert mvtec.list_categories(root) == ["bottle", "screw"]


def test_list_categories_of_a_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        mvtec.list_categories(tmp_path / "absent")


def test_reference_paths_are_the_first_shots_in_sorted_order(root: Path) -> None:
    folder = root / "screw" / "train" / "good"
    assert mvtec.reference_paths(root, "screw", 3) == [
        folder / "001.png",
        folder / "002.png",
        folder / "003.jpg",
    ]
    assert mvtec.reference_paths(root, "screw", 4)[-1] == folder / "010.png"
    assert mvtec.reference_paths(root, "screw", 0) == []


def test_reference_paths_raise_when_too_few(root: Path) -> None:
    with pytest.raises(ValueError, match="fewer than the 5 shots"):
        mvtec.reference_paths(root, "screw", 5)
    with pytest.raises(ValueError, match="shots must be"):
        mvtec.reference_paths(root, "screw", -1)


def test_test_items_are_sorted_and_labelled(root: Path) -> None:
    items = mvtec.test_items(root, "screw")
    base = root / "screw"
    assert [(i.defect_type, i.path.name) for i in items] == [
        ("good", "000.png"),
        ("good", "001.png"),
        ("scratch", "000.png"),
        ("scratch", "001.png"),
    ]
    assert [i.anomalous for i in items] == [False, False, True, True]
    assert items[0].mask_path is None
    assert items[3].mask_path == base / "ground_truth" / "scratch" / "001_mask.png"


def test_missing_mask_raises_naming_the_image(root: Path) -> None:
    (root / "screw" / "ground_truth" / "scratch" / "001_mask.png").unlink()
    with pytest.raises(ValueError, match=r"scratch/001\.png has no ground-truth mask"):
        mvtec.test_items(root, "screw")


def test_load_mask_resizes_nearest_with_pil_size_order(tmp_path: Path) -> None:
    array = np.zeros((4, 6), np.uint8)  # H=4, W=6
    array[:2, :3] = 255
    path = _png(tmp_path / "m.png", array)
    mask = mvtec.load_mask(path, (12, 8))  # (W, H)
    assert mask.dtype == bool
    assert mask.shape == (8, 12)
    expected = np.zeros((8, 12), bool)
    expected[:4, :6] = True
    np.testing.assert_array_equal(mask, expected)


def test_load_mask_treats_any_nonzero_value_as_defect(tmp_path: Path) -> None:
    path = _png(tmp_path / "m.png", np.array([[0, 1], [0, 255]], np.uint8))
    np.testing.assert_array_equal(mvtec.load_mask(path, (2, 2)), [[False, True], [False, True]])


def test_load_mask_of_none_is_all_false() -> None:
    mask = mvtec.load_mask(None, (5, 3))
    assert mask.shape == (3, 5)
    assert not mask.any()
