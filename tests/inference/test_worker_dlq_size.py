"""A message near the broker's size limit still dead-letters: the DLQ copy is cut to fit."""

import hashlib
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry

from inference.metrics import WorkerMetrics
from inference.worker import InferenceWorker, WorkerConfig
from ingest.transport.kafka import KafkaTransport
from storage.engine import make_engine, make_session_factory

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# Just under kafka-python's default max_request_size (1 MiB): the frames producer accepts it,
# but the same bytes plus the dead-letter headers would not fit.
NEAR_LIMIT = 1_048_576 - 512


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_near_limit_garbage_reaches_the_dlq_cut_to_fit(database_url, kafka_config, make_topic,
                                                       cpu_detector):
    topics = WorkerConfig(frames_topic=make_topic(), verdicts_topic=make_topic(),
                          dlq_topic=make_topic(), batch_size=4, batch_wait_ms=200)
    transport = KafkaTransport(kafka_config)
    producer = transport.producer()
    garbage = (bytes(range(256)) * 4097)[:NEAR_LIMIT]
    producer.send(topics.frames_topic, key=b"cam-big", value=garbage)
    producer.flush()

    consumer = transport.consumer([topics.frames_topic], group_id=f"w-{uuid.uuid4().hex[:8]}")
    worker = InferenceWorker(consumer=consumer, producer=producer,
                             session_factory=make_session_factory(make_engine(database_url)),
                             detector=cpu_detector, config=topics,
                             metrics=WorkerMetrics(CollectorRegistry()))
    deadline = time.monotonic() + 60
    outcome = None
    while outcome is None and time.monotonic() < deadline:
        outcome = worker.step()
    consumer.close()
    assert outcome is not None
    assert outcome.dead_letters == 1

    reader = transport.consumer([topics.dlq_topic], group_id=f"r-{uuid.uuid4().hex[:8]}")
    records = []
    deadline = time.monotonic() + 30
    while not records and time.monotonic() < deadline:
        records = reader.poll(max_records=10, timeout_s=0.5)
    reader.close()
    producer.close()
    assert len(records) == 1
    headers = {k: v.decode() for k, v in records[0].headers}
    assert headers["reason"] == "not_an_envelope"
    assert headers["payload_truncated"] == "true"
    assert int(headers["payload_bytes"]) == len(garbage)
    assert headers["payload_sha256"] == hashlib.sha256(garbage).hexdigest()
    assert records[0].value == garbage[: topics.dlq_max_value_bytes]
    assert headers["original_offset"] == "0"  # where the whole message still lives
