"""The line simulator: cameras, defect fraction, rate, ids."""

import threading
import time
from collections import Counter
from itertools import pairwise

import pytest

from ingest.envelope import decode
from ingest.sources.simulator import LineSimulator, SimImage, camera_ids, images_from_folders
from tests.ingest.sample_images import png_bytes

GOOD = [SimImage(png_bytes(i), name=f"good-{i}.png") for i in range(3)]
BAD = [SimImage(png_bytes(100 + i), label="scratch", name=f"bad-{i}.png") for i in range(2)]


def test_cameras_take_turns_and_number_their_own_frames():
    frames = list(LineSimulator(GOOD + BAD, cameras=3, frames=7, run_id="run1"))

    assert [f.camera_id for f in frames] == ["cam-01", "cam-02", "cam-03"] * 2 + ["cam-01"]
    assert [f.frame_id for f in frames if f.camera_id == "cam-01"] == [
        "run1-000000000", "run1-000000001", "run1-000000002"]
    assert decode(frames[4].encode()) == frames[4]


def test_defect_fraction_is_respected_and_labels_follow_the_image():
    frames = list(LineSimulator(GOOD + BAD, frames=2000, defect_fraction=0.2, seed=1))

    defective = [f for f in frames if f.metadata["anomalous"]]
    assert 0.17 < len(defective) / len(frames) < 0.23
    bad_bytes = {i.data for i in BAD}
    assert all(f.image in bad_bytes and f.metadata["label"] == "scratch" for f in defective)
    assert all(f.image not in bad_bytes for f in frames if not f.metadata["anomalous"])
    assert set(Counter(f.metadata["source"] for f in frames)) == {i.name for i in GOOD + BAD}


def test_the_same_seed_draws_the_same_images_and_runs_get_distinct_ids():
    first = list(LineSimulator(GOOD + BAD, frames=50, seed=4))
    second = list(LineSimulator(GOOD + BAD, frames=50, seed=4))
    assert [f.image for f in first] == [f.image for f in second]
    assert first[0].frame_id != second[0].frame_id


def test_rate_is_the_whole_line_and_capture_time_is_emission_time():
    started = time.monotonic()
    frames = list(LineSimulator(GOOD, cameras=["a", "b"], frames=9, rate_hz=60.0,
                                defect_fraction=0.0))
    elapsed = time.monotonic() - started
    assert elapsed >= 8 / 60 - 0.005
    gaps = [(b.captured_at - a.captured_at).total_seconds() for a, b in pairwise(frames)]
    assert min(gaps) >= 1 / 60 - 0.005


def test_an_endless_line_stops_when_asked():
    stop = threading.Event()
    seen = 0
    for _ in LineSimulator(GOOD + BAD).stream(stop):
        seen += 1
        if seen == 500:
            stop.set()
    assert seen == 500


def test_inconsistent_settings_are_refused():
    with pytest.raises(ValueError, match="defective image"):
        LineSimulator(GOOD, defect_fraction=0.1)
    with pytest.raises(ValueError, match="good image"):
        LineSimulator(BAD, defect_fraction=0.5)
    with pytest.raises(ValueError, match="distinct"):
        camera_ids(["a", "a"])


def test_images_from_folders_labels_each_folder(tmp_path):
    (tmp_path / "ok").mkdir()
    (tmp_path / "hole").mkdir()
    (tmp_path / "ok" / "1.png").write_bytes(png_bytes(1))
    (tmp_path / "ok" / "2.png").write_bytes(png_bytes(2))
    (tmp_path / "hole" / "1.png").write_bytes(png_bytes(3))

    images = images_from_folders(tmp_path / "ok", {"hole": tmp_path / "hole"}, limit=1)

    assert [(i.label, i.name, i.anomalous) for i in images] == [
        ("good", "1.png", False), ("hole", "1.png", True)]
