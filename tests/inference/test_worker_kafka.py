"""The worker on the real path: Kafka-protocol broker (Tansu) → worker → PostgreSQL."""

import json
import struct
import time
import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from inference.metrics import WorkerMetrics
from inference.pool import add_references
from inference.worker import InferenceWorker, WorkerConfig
from ingest.envelope import MAGIC, FrameEnvelope
from ingest.sources import frames_from_files
from ingest.transport.kafka import KafkaTransport
from storage import repositories
from storage.engine import make_engine, make_session_factory

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


def poll_until(consumer, count, deadline_s):
    records = []
    deadline = time.monotonic() + deadline_s
    while len(records) < count and time.monotonic() < deadline:
        records += consumer.poll(max_records=50, timeout_s=0.5)
    return records


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_frames_through_kafka_reach_postgres_bad_ones_reach_the_dlq(
    database_url, kafka_config, make_topic, cpu_detector, textile_files
):
    topics = WorkerConfig(frames_topic=make_topic(partitions=2), verdicts_topic=make_topic(),
                          dlq_topic=make_topic(), batch_size=4, batch_wait_ms=200)
    factory = make_session_factory(make_engine(database_url))
    add_references(session_factory=factory, product="textile", added_by="test",
                   images=[p.read_bytes() for p in textile_files["nominal"][:3]])
    cpu_detector._products.pop("textile", None)  # force loading this test's pool

    transport = KafkaTransport(kafka_config)
    producer = transport.producer()
    good = [
        *frames_from_files(textile_files["nominal"][40:44], product="textile", camera_id="cam-1"),
        *frames_from_files(textile_files["global"][:4], product="textile", camera_id="cam-2"),
    ]
    for frame in good:
        producer.send(topics.frames_topic, key=frame.key, value=frame.encode())
    png = good[0].image
    header = json.dumps({"camera_id": "cam-9", "frame_id": "x", "product": "textile",
                         "captured_at": datetime.now(UTC).isoformat()}).encode()
    bad = {
        "not_an_envelope": b"GET / HTTP/1.1",
        "truncated_image": struct.pack(">4sBI", MAGIC, 1, len(header)) + header + png[:100],
        "unknown_product": FrameEnvelope(camera_id="cam-9", frame_id="y", product="bolts",
                                         captured_at=datetime.now(UTC), image=png).encode(),
        "unknown_schema_version": struct.pack(">4sBI", MAGIC, 7, len(header)) + header + png,
    }
    for value in bad.values():
        producer.send(topics.frames_topic, key=b"cam-9", value=value)
    producer.flush()

    group = f"workers-{uuid.uuid4().hex[:8]}"
    consumer = transport.consumer([topics.frames_topic], group_id=group)
    worker = InferenceWorker(consumer=consumer, producer=producer, session_factory=factory,
                             detector=cpu_detector, config=topics,
                             metrics=WorkerMetrics(CollectorRegistry()))
    consumed = 0
    deadline = time.monotonic() + 90
    while consumed < len(good) + len(bad) and time.monotonic() < deadline:
        outcome = worker.step()
        consumed += outcome.consumed if outcome else 0
    consumer.close()
    assert consumed == len(good) + len(bad)

    with factory() as session:
        views = repositories.list_verdicts(session=session, limit=100)
    assert sorted((v.camera_id, v.frame_id) for v in views) == sorted(
        (f.camera_id, f.frame_id) for f in good)
    assert all(v.anomalous for v in views if v.camera_id == "cam-2")  # global defects

    reader = transport.consumer([topics.dlq_topic, topics.verdicts_topic],
                                group_id=f"reader-{uuid.uuid4().hex[:8]}")
    records = poll_until(reader, len(good) + len(bad), 30)
    reader.close()
    dead = [r for r in records if r.topic == topics.dlq_topic]
    assert sorted(dict(r.headers)["reason"].decode() for r in dead) == sorted(bad)
    assert all(dict(r.headers)["original_topic"].decode() == topics.frames_topic for r in dead)
    assert len([r for r in records if r.topic == topics.verdicts_topic]) == len(good)

    # Offsets were committed: the next member of the group finds nothing left to read.
    again = transport.consumer([topics.frames_topic], group_id=group)
    assert poll_until(again, 1, 8) == []
    again.close()
    producer.close()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_consumer_lag_gauge_follows_the_backlog_on_metrics(
    database_url, kafka_config, make_topic, cpu_detector
):
    import urllib.request

    from inference.health import HealthServer, Readiness

    def metrics_page() -> str:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    config = WorkerConfig(frames_topic=make_topic(), verdicts_topic=make_topic(),
                          dlq_topic=make_topic(), batch_size=2, batch_wait_ms=200)
    transport = KafkaTransport(kafka_config)
    producer = transport.producer()
    for i in range(7):  # no model needed: each is a dead letter
        producer.send(config.frames_topic, key=b"cam-9", value=b"not a frame %d" % i)
    producer.flush()
    registry = CollectorRegistry()
    consumer = transport.consumer([config.frames_topic], group_id=f"lag-{uuid.uuid4().hex[:8]}")
    worker = InferenceWorker(consumer=consumer, producer=producer,
                             session_factory=make_session_factory(make_engine(database_url)),
                             detector=cpu_detector, config=config,
                             metrics=WorkerMetrics(registry))
    server = HealthServer(registry=registry, readiness=Readiness(), port=0,
                          host="127.0.0.1").start()
    try:
        deadline = time.monotonic() + 30
        first = None
        while first is None and time.monotonic() < deadline:
            first = worker.step()
        assert first is not None
        assert first.consumed == 2
        body = metrics_page()
        assert "# TYPE agpt_consumer_lag_messages gauge" in body
        assert "agpt_consumer_lag_messages 5.0" in body

        consumed = first.consumed
        while consumed < 7 and time.monotonic() < deadline:
            outcome = worker.step()
            consumed += outcome.consumed if outcome else 0
        assert consumed == 7
        assert "agpt_consumer_lag_messages 0.0" in metrics_page()
    finally:
        server.stop()
        consumer.close()
        producer.close()
