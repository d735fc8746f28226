"""`agpt ingest` against a real (Tansu) broker: every source, keyed frames, claim check."""

import threading
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from agpt.cli import build_parser, main
from agpt.ingest_commands import run_ingest
from agpt.settings import Settings
from inference.images import ImageLimits, frame_image_bytes
from ingest.blobstore import LocalBlobStore
from ingest.envelope import FrameEnvelope, decode
from ingest.transport.kafka import KafkaConfig, KafkaTransport
from tests.ingest.sample_images import noisy_png, png_bytes


@pytest.fixture
def frames_topic(make_topic, monkeypatch) -> str:
    topic = make_topic(partitions=2)
    monkeypatch.setenv("AGPT_FRAMES_TOPIC", topic)
    return topic


def received(config: KafkaConfig, topic: str, count: int) -> list[tuple[bytes, FrameEnvelope]]:
    """(key, envelope) of ``count`` records of ``topic`` (or fewer after 20 s)."""
    consumer = KafkaTransport(config).consumer([topic], group_id=f"check-{uuid.uuid4().hex}")
    records = []
    deadline = time.monotonic() + 20
    try:
        while len(records) < count and time.monotonic() < deadline:
            records += consumer.poll(max_records=count, timeout_s=0.2)
    finally:
        consumer.close()
    return [(r.key, decode(r.value)) for r in records]


def ingest(bootstrap: str, *argv: str) -> int:
    return main(["ingest", *argv, "--kafka-bootstrap", bootstrap])


def test_without_a_broker_or_product_nothing_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AGPT_KAFKA_BOOTSTRAP", raising=False)
    assert main(["ingest", str(tmp_path), "--product", "p"]) == 2
    assert main(["ingest", str(tmp_path), "--kafka-bootstrap", "127.0.0.1:1"]) == 2
    assert main(["ingest", str(tmp_path), "--product", "p", "--kafka-bootstrap", "127.0.0.1:1",
                 "--blob-store", "s3://bucket/x"]) == 2
    err = capsys.readouterr().err
    assert "needs a broker" in err
    assert "needs --product" in err
    assert "cannot create a Kafka producer for 127.0.0.1:1" in err  # s3:// stores are served now


def test_every_source_parses():
    parser = build_parser()
    for argv in (["ingest", "d", "--product", "p"], ["ingest", "d", "--source", "watch"],
                 ["ingest", "v.avi", "--source", "video", "--stride", "2", "--max-fps", "5"],
                 ["ingest", "set", "--source", "replay", "--rate", "10"],
                 ["ingest", "--source", "simulate", "--cameras", "4", "--frames", "10"]):
        assert callable(parser.parse_args(argv).func)


@pytest.mark.kafka
def test_folder_is_sent_keyed_with_a_claim_check_and_a_rerun_keeps_the_ids(
        tmp_path, kafka_config, kafka_bootstrap, frames_topic):
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(1))
    (folder / "b.png").write_bytes(noisy_png(80))  # ~19 kB: above the limit below
    blobs = tmp_path / "blobs"
    argv = [str(folder), "--product", "bracket", "--camera", "cam-9", "--blob-store", str(blobs),
            "--claim-check-bytes", "5000"]

    assert ingest(kafka_bootstrap, *argv) == 0
    assert ingest(kafka_bootstrap, *argv) == 0

    got = received(kafka_config, frames_topic, 4)
    assert {key for key, _ in got} == {b"cam-9"}
    ids = [frame.frame_id for _, frame in got]
    assert ids[:2] == ids[2:]  # same files, same ids: deduplicated downstream
    big = next(frame for _, frame in got if frame.metadata["source"] == "b.png")
    assert big.image is None
    assert frame_image_bytes(big, ImageLimits(), LocalBlobStore(blobs)) == (
        folder / "b.png").read_bytes()


@pytest.mark.kafka
def test_simulate_sends_several_cameras(tmp_path, kafka_config, kafka_bootstrap, frames_topic):
    for label, shades in {"good": (1, 2), "scratch": (3,)}.items():
        (tmp_path / label).mkdir()
        for shade in shades:
            (tmp_path / label / f"{shade}.png").write_bytes(png_bytes(shade))

    assert ingest(kafka_bootstrap, str(tmp_path), "--source", "simulate", "--cameras", "3",
                  "--frames", "9", "--defect-fraction", "0.5", "--run-id", "t1") == 0

    got = received(kafka_config, frames_topic, 9)
    assert sorted(key for key, _ in got) == [b"cam-01"] * 3 + [b"cam-02"] * 3 + [b"cam-03"] * 3
    assert {frame.product for _, frame in got} == {"textile"}
    assert {frame.metadata["label"] for _, frame in got} <= {"good", "scratch"}


@pytest.mark.kafka
def test_replay_and_video_sources(tmp_path, kafka_config, kafka_bootstrap, frames_topic):
    for kind in ("good", "hole"):
        (tmp_path / "tile" / "test" / kind).mkdir(parents=True)
        (tmp_path / "tile" / "test" / kind / "000.png").write_bytes(png_bytes(len(kind)))
    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(6):
        writer.write(np.full((48, 64, 3), 30 * i, np.uint8))
    writer.release()

    assert ingest(kafka_bootstrap, str(tmp_path / "tile"), "--source", "replay",
                  "--camera", "replay-1", "--rate", "50") == 0
    assert ingest(kafka_bootstrap, str(video), "--source", "video", "--product", "tile",
                  "--camera", "cam-2", "--stride", "2") == 0

    got = received(kafka_config, frames_topic, 5)
    replayed = [frame for key, frame in got if key == b"replay-1"]
    filmed = [frame for key, frame in got if key == b"cam-2"]
    assert [(f.frame_id, f.metadata["label"]) for f in replayed] == [
        ("test/good/000", "good"), ("test/hole/000", "hole")]
    assert [f.frame_id for f in filmed] == ["cam-000000000", "cam-000000002", "cam-000000004"]


@pytest.mark.kafka
def test_watch_sends_new_files_until_stopped(tmp_path, kafka_config, kafka_bootstrap,
                                             frames_topic):
    folder = tmp_path / "line"
    folder.mkdir()
    args = build_parser().parse_args(["ingest", str(folder), "--source", "watch", "--product",
                                      "p", "--poll-s", "0.05", "--settle-s", "0"])
    settings = Settings(kafka_bootstrap=kafka_bootstrap)
    stop = threading.Event()
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(run_ingest(settings, args, stop)))
    thread.start()
    try:
        (folder / "x.png").write_bytes(png_bytes(5))
        deadline = time.monotonic() + 15
        while not (folder / "sent" / "x.png").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=15)

    assert codes == [0]
    [(key, frame)] = received(kafka_config, frames_topic, 1)
    assert (key, frame.metadata["source"]) == (b"cam-01", "x.png")
    assert not Path(folder / "x.png").exists()
