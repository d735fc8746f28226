"""Publishing frames: key = camera id (order per camera), claim check above the limit."""

import time
from datetime import UTC, datetime

import pytest

from ingest.blobstore import LocalBlobStore
from ingest.envelope import FrameEnvelope, decode
from ingest.publisher import FramePublisher, FrameTooLargeError
from ingest.transport.kafka import KafkaConfig, KafkaTransport
from ingest.transport.memory import InProcessBroker
from tests.ingest.sample_images import noisy_png, png_bytes


def frame(camera: str, index: int, image: bytes) -> FrameEnvelope:
    return FrameEnvelope(camera_id=camera, frame_id=f"{index:04d}", product="p",
                         captured_at=datetime.now(UTC), image=image)


def test_without_a_blob_store_an_oversized_image_is_refused_before_sending():
    broker = InProcessBroker()
    publisher = FramePublisher(broker.producer(), topic="t", claim_check_bytes=1_000)
    with pytest.raises(FrameTooLargeError, match="AGPT_BLOB_STORE"):
        publisher.send(frame("cam-1", 0, noisy_png(64)))
    assert broker.end_offset("t") == 0


def test_send_all_keys_by_camera_and_counts_claim_checks(tmp_path):
    broker = InProcessBroker()
    publisher = FramePublisher(broker.producer(), topic="t", claim_check_bytes=5_000,
                               blob_store=LocalBlobStore(tmp_path))
    frames = [frame("cam-1", 0, png_bytes(1)), frame("cam-2", 0, noisy_png(64)),
              frame("cam-1", 1, png_bytes(2))]

    assert publisher.send_all(frames, flush_every=2) == 3

    records = broker.read("t", 0, 10)
    assert [r.key for r in records] == [b"cam-1", b"cam-2", b"cam-1"]
    assert [decode(r.value).image_uri is not None for r in records] == [False, True, False]
    assert (publisher.sent, publisher.claim_checked) == (3, 1)


@pytest.mark.kafka
def test_on_kafka_each_camera_stays_in_one_partition_in_order(kafka_config: KafkaConfig,
                                                               make_topic) -> None:
    topic = make_topic(partitions=3)
    transport = KafkaTransport(kafka_config)
    producer = transport.producer()
    cameras = [f"cam-{i}" for i in range(6)]
    try:
        publisher = FramePublisher(producer, topic=topic)
        publisher.send_all(frame(c, i, png_bytes(i)) for i in range(8) for c in cameras)
    finally:
        producer.close()

    consumer = transport.consumer([topic], group_id=f"g-{topic}")
    records = []
    deadline = time.monotonic() + 20
    try:
        while len(records) < 48 and time.monotonic() < deadline:
            records += consumer.poll(max_records=48, timeout_s=0.2)
    finally:
        consumer.close()

    assert len(records) == 48
    for camera in cameras:
        mine = [r for r in records if r.key == camera.encode()]
        assert len({r.partition for r in mine}) == 1
        assert [decode(r.value).frame_id for r in mine] == [f"{i:04d}" for i in range(8)]
    assert len({r.partition for r in records}) > 1  # the keys do spread over partitions
