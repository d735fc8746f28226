"""Replay of stored sets: MVTec layouts and plain folders, labels in the metadata."""

import time
from itertools import pairwise
from pathlib import Path

import pytest

from ingest.sources.replay import replay, stored_set
from tests.ingest.sample_images import png_bytes


def mvtec_category(root: Path, defects: dict[str, int], good: int = 2) -> Path:
    """``root/test/good/000.png``... plus ``train/good`` and ``ground_truth`` (not replayed)."""
    shade = 0
    for kind, count in {"good": good, **defects}.items():
        (root / "test" / kind).mkdir(parents=True)
        for i in range(count):
            shade += 1
            (root / "test" / kind / f"{i:03d}.png").write_bytes(png_bytes(shade))
    (root / "train" / "good").mkdir(parents=True)
    (root / "train" / "good" / "000.png").write_bytes(png_bytes(200))
    if defects:
        (root / "ground_truth" / next(iter(defects))).mkdir(parents=True)
    return root


def test_a_category_replays_its_test_split_with_labels(tmp_path):
    root = mvtec_category(tmp_path / "bottle", {"crack": 1, "scratch": 2})

    frames = list(replay(stored_set(root), camera_id="replay-1"))

    assert [f.frame_id for f in frames] == [
        "test/crack/000", "test/good/000", "test/good/001", "test/scratch/000",
        "test/scratch/001"]
    assert {f.product for f in frames} == {"bottle"}
    assert [f.metadata["label"] for f in frames] == ["crack", "good", "good", "scratch",
                                                     "scratch"]
    assert [f.metadata["anomalous"] for f in frames] == [True, False, False, True, True]
    assert frames[1].image == (root / "test" / "good" / "000.png").read_bytes()


def test_a_dataset_root_gives_one_product_per_category(tmp_path):
    mvtec_category(tmp_path / "set" / "bottle", {"crack": 1}, good=1)
    mvtec_category(tmp_path / "set" / "tile", {"oil": 1}, good=1)

    frames = list(replay(stored_set(tmp_path / "set"), camera_id="c"))

    assert [(f.product, f.frame_id, f.metadata["label"]) for f in frames] == [
        ("bottle", "bottle/test/crack/000", "crack"), ("bottle", "bottle/test/good/000", "good"),
        ("tile", "tile/test/good/000", "good"), ("tile", "tile/test/oil/000", "oil")]


def test_a_plain_folder_replays_without_labels(tmp_path):
    for i in range(3):
        (tmp_path / f"p{i}.png").write_bytes(png_bytes(i))
    (tmp_path / "readme.txt").write_text("not an image")

    frames = list(replay(stored_set(tmp_path, product="textile"), camera_id="c", run_id="r7"))

    assert [f.frame_id for f in frames] == ["r7/p0", "r7/p1", "r7/p2"]
    assert all("label" not in f.metadata and f.product == "textile" for f in frames)


def test_shuffle_is_seeded_and_keeps_every_image(tmp_path):
    items = stored_set(mvtec_category(tmp_path / "bottle", {"crack": 4}, good=4))
    first = [f.frame_id for f in replay(items, camera_id="c", shuffle_seed=3)]
    assert first == [f.frame_id for f in replay(items, camera_id="c", shuffle_seed=3)]
    assert first != sorted(first)
    assert sorted(first) == [f.frame_id for f in replay(items, camera_id="c")]


def test_replay_keeps_the_rate_and_stamps_capture_time_at_emission(tmp_path):
    items = stored_set(mvtec_category(tmp_path / "bottle", {"crack": 2}, good=3))
    started = time.monotonic()
    frames = list(replay(items, camera_id="c", rate_hz=40.0))
    elapsed = time.monotonic() - started
    assert elapsed >= 4 / 40 - 0.005
    gaps = [(b.captured_at - a.captured_at).total_seconds() for a, b in pairwise(frames)]
    assert min(gaps) >= 1 / 40 - 0.005


def test_an_empty_set_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no images"):
        stored_set(tmp_path)
