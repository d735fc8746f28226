"""The folder watcher on a real directory, sending through the in-process transport."""

import os
import threading
import time
from pathlib import Path

from ingest.blobstore import LocalBlobStore
from ingest.envelope import decode
from ingest.publisher import FramePublisher
from ingest.sources.folder_watch import FolderWatcher, watch_folder
from ingest.transport.memory import InProcessBroker
from tests.ingest.sample_images import noisy_png, png_bytes

TOPIC = "agpt.frames"


def watcher_of(folder: Path, **kwargs) -> FolderWatcher:
    return FolderWatcher(folder, product="bracket", camera_id="cam-03", settle_s=0.0, **kwargs)


def names(ready) -> list[str]:
    return [r.path.name for r in ready]


def test_a_file_is_ready_once_unchanged_between_two_polls(tmp_path):
    watcher = watcher_of(tmp_path)
    (tmp_path / "a.png").write_bytes(png_bytes(10))

    assert watcher.poll() == []  # first sighting: maybe still being written
    [ready] = watcher.poll()

    assert ready.path == tmp_path / "a.png"
    assert ready.frame.image == png_bytes(10)
    assert (ready.frame.camera_id, ready.frame.product) == ("cam-03", "bracket")
    assert ready.frame.metadata["source"] == "a.png"
    assert abs(ready.frame.captured_at.timestamp() - (tmp_path / "a.png").stat().st_mtime) < 1e-3


def test_a_growing_file_waits_until_its_writer_is_done(tmp_path):
    watcher = watcher_of(tmp_path)
    data = png_bytes(20)
    path = tmp_path / "b.png"
    path.write_bytes(data[:10])
    assert watcher.poll() == []
    with path.open("ab") as sink:
        sink.write(data[10:30])
    assert watcher.poll() == []  # grew since the last poll
    with path.open("ab") as sink:
        sink.write(data[30:])
    assert watcher.poll() == []
    [ready] = watcher.poll()
    assert ready.frame.image == data


def test_settle_time_is_measured_from_the_last_change(tmp_path):
    watcher = FolderWatcher(tmp_path, product="p", camera_id="c", settle_s=0.3)
    (tmp_path / "c.png").write_bytes(png_bytes(30))
    assert watcher.poll() == []
    assert watcher.poll() == []  # unchanged, but not for 0.3 s yet
    time.sleep(0.35)
    assert names(watcher.poll()) == ["c.png"]


def test_partial_and_hidden_names_are_ignored_until_renamed(tmp_path):
    watcher = watcher_of(tmp_path)
    (tmp_path / "d.png.part").write_bytes(png_bytes(40))
    (tmp_path / ".e.png").write_bytes(png_bytes(41))
    (tmp_path / "notes.txt").write_text("shift 2")
    watcher.poll()
    assert watcher.poll() == []

    (tmp_path / "d.png.part").rename(tmp_path / "d.png")
    watcher.poll()
    assert names(watcher.poll()) == ["d.png"]


def test_sent_files_move_to_sent_and_a_restart_does_not_resend_them(tmp_path):
    watcher = watcher_of(tmp_path)
    for shade in (1, 2):
        (tmp_path / f"img{shade}.png").write_bytes(png_bytes(shade))
    watcher.poll()
    ready = watcher.poll()
    assert names(ready) == ["img1.png", "img2.png"]

    watcher.mark_sent(ready)

    assert sorted(p.name for p in (tmp_path / "sent").iterdir()) == ["img1.png", "img2.png"]
    restarted = watcher_of(tmp_path)
    restarted.poll()
    assert restarted.poll() == []


def test_frame_ids_follow_name_and_content_so_a_resend_is_deduplicated(tmp_path):
    (tmp_path / "f.png").write_bytes(png_bytes(50))
    first = watcher_of(tmp_path)
    first.poll()
    [before_crash] = first.poll()  # sent, then the process died before the move

    after_restart = watcher_of(tmp_path)
    after_restart.poll()
    [again] = after_restart.poll()
    assert again.frame.frame_id == before_crash.frame.frame_id
    after_restart.mark_sent([again])

    (tmp_path / "f.png").write_bytes(png_bytes(51))  # the camera reuses the name
    after_restart.poll()
    [new_picture] = after_restart.poll()
    assert new_picture.frame.frame_id != again.frame.frame_id
    assert new_picture.frame.frame_id.startswith("f.png@")
    after_restart.mark_sent([new_picture])
    assert len(list((tmp_path / "sent").iterdir())) == 2  # the first f.png is kept


def test_max_batch_bounds_one_poll_and_oldest_files_go_first(tmp_path):
    watcher = watcher_of(tmp_path, max_batch=2)
    for i, name in enumerate(["z.png", "y.png", "x.png"]):
        path = tmp_path / name
        path.write_bytes(png_bytes(60 + i))
        stamp = 1_700_000_000 + i
        os.utime(path, (stamp, stamp))
    watcher.poll()
    assert names(watcher.poll()) == ["z.png", "y.png"]


def test_watch_folder_sends_keyed_frames_then_moves_the_files(tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    broker = InProcessBroker()
    publisher = FramePublisher(broker.producer(), topic=TOPIC,
                               blob_store=LocalBlobStore(tmp_path / "blobs"),
                               claim_check_bytes=20_000)
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(watch_folder(watcher_of(incoming), publisher, stop=stop,
                                                  poll_s=0.02)))
    thread.start()
    try:
        (incoming / "small.png").write_bytes(png_bytes(70))
        (incoming / "big.png").write_bytes(noisy_png(120))  # ~43 kB: claim check
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(list(incoming.glob("*.png"))) > 0:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(timeout=5)

    assert result == [2]
    assert sorted(p.name for p in (incoming / "sent").iterdir()) == ["big.png", "small.png"]
    records = broker.consumer([TOPIC], group_id="check").poll(max_records=10, timeout_s=1)
    frames = {decode(r.value).metadata["source"]: (r.key, decode(r.value)) for r in records}
    assert {key for key, _ in frames.values()} == {b"cam-03"}
    assert frames["small.png"][1].image == png_bytes(70)
    assert frames["big.png"][1].image is None
    assert frames["big.png"][1].image_uri.startswith((tmp_path / "blobs").as_uri())
