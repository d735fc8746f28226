"""Issue 10's hostile messages through Tansu, a worker and PostgreSQL, one partition.

Every example message of the issue is followed, on the same partition, by a good frame. Each
example must become exactly one dead letter with its reason, every good frame one verdict,
the worker must keep running (no exit, no stall: it commits past everything) and nothing
outside the blob store may be opened (audited with ``sys.addaudithook``).
A second test switches the envelope's limits off, so that the same values reach the
database: the database's refusal must then dead-letter only the offender, with its SQLSTATE.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inference.metrics import WorkerMetrics
from inference.worker import InferenceWorker, WorkerConfig
from ingest.blobstore import LocalBlobStore
from ingest.envelope import FrameEnvelope, sha256_hex
from ingest.transport.kafka import KafkaTransport
from storage import repositories
from storage.engine import make_engine, make_session_factory
from tests.fixtures.pools import add_textile_pool
from tests.inference.test_worker_dlq_kafka import LIMITS, header, raw, read_all

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]
WAIT_S = 120.0
_AUDIT: dict[str, list[str] | None] = {"opened": None}


def _audit(event: str, args: tuple) -> None:
    opened = _AUDIT["opened"]
    if opened is not None and event == "open" and isinstance(args[0], str | bytes):
        opened.append(os.fsdecode(args[0]))


@pytest.fixture
def audited_opens():
    """Paths passed to open() in this process while the test runs."""
    if not getattr(sys, "_agpt_audit_installed", False):
        sys.addaudithook(_audit)  # cannot be removed; records only while a test asks
        sys._agpt_audit_installed = True
    _AUDIT["opened"] = []
    yield _AUDIT["opened"]
    _AUDIT["opened"] = None


def issue_examples(store: Path, outside: Path, jpeg: bytes) -> dict[str, tuple[bytes, str, str]]:
    """kind → (message, reason, field): the issue's examples, classes 1 to 4."""
    digest = sha256_hex(jpeg)
    fifo_in, fifo_out = store / "ab" / "fifo.jpg", outside / "fifo.jpg"
    os.mkfifo(fifo_in)
    os.mkfifo(fifo_out)

    def uri(text: str) -> bytes:
        return raw(header(image_uri=text, image_sha256=digest))

    return {
        # 1. passed the envelope, refused by the database
        "nul_camera_id": (raw(header(camera_id="cam\x00-1"), jpeg), "bad_text", "camera_id"),
        "nul_product": (raw(header(product="text\x00ile"), jpeg), "bad_text", "product"),
        "camera_id_200": (raw(header(camera_id="c" * 200), jpeg), "too_long", "camera_id"),
        "metadata_nan": (raw(header(metadata={"v": float("nan")}), jpeg), "non_finite",
                         "metadata"),
        "metadata_nul": (raw(header(metadata={"lot": "a\u0000b"}), jpeg), "bad_text",
                         "metadata"),
        "captured_at_year_1": (raw(header(captured_at="0001-01-01T00:00:00+05:00"), jpeg),
                               "out_of_range", "captured_at"),
        # 2. crash loops
        "surrogate_camera_id": (raw(header(camera_id="cam-\udc80"), jpeg), "bad_text",
                                "camera_id"),
        "surrogate_image_uri": (uri(f"file://{store}/ab/\udc80.jpg"), "bad_text", "image_uri"),
        # 3. files outside the store
        "etc_shadow": (uri("file:///etc/shadow"), "not_in_store", "image_uri"),
        "proc_environ": (uri("file:///proc/self/environ"), "not_in_store", "image_uri"),
        "dotdot_with_hash": (uri(f"file://{store}/../outside/x.jpg"), "not_in_store",
                             "image_uri"),
        "outside_exists": (uri((outside / "x.jpg").as_uri()), "not_in_store", "image_uri"),
        "outside_missing": (uri((outside / "y.jpg").as_uri()), "not_in_store", "image_uri"),
        # 4. unbounded or blocking reads
        "dev_zero": (uri("file:///dev/zero"), "not_in_store", "image_uri"),
        "fifo_in_store": (uri(fifo_in.as_uri()), "not_in_store", "image_uri"),
        "fifo_outside": (uri(fifo_out.as_uri()), "not_in_store", "image_uri"),
    }


def run_worker(worker, registry, expected_consumed):
    """Run ``worker`` in a thread until it consumed ``expected_consumed`` and its last
    commit went through; stop it. Returns (still running then, exceptions it raised)."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(stop)
        except BaseException as exc:  # surfaced by the caller's assertions
            failure.append(exc)

    thread = threading.Thread(target=run, name="worker", daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    def done() -> bool:
        consumed = registry.get_sample_value("agpt_frames_consumed_total") or 0
        dead = sum(v for _, v in _samples(registry, "agpt_dlq_messages_total"))
        verdicts = sum(v for _, v in _samples(registry, "agpt_verdicts_total"))
        return consumed >= expected_consumed and dead + verdicts >= expected_consumed

    while not done() and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    alive = thread.is_alive()
    stop.set()
    thread.join(timeout=60)
    return alive, failure


def judged_after_each(sequence, config, factory, transport, expected):
    """Assert: one dead letter per example (reason/field), one verdict per good frame."""
    with factory() as session:
        views = repositories.list_verdicts(session=session, limit=1000)
    good = sorted((f.camera_id, f.frame_id) for kind, f in sequence if kind == "good")
    assert sorted((v.camera_id, v.frame_id) for v in views) == good
    dead = [r for r in read_all(transport, [config.dlq_topic], len(expected))]
    assert Counter(r.key for r in dead) == Counter(f"bad-{k}".encode() for k in expected)
    return {r.key.decode().removeprefix("bad-"): {n: v.decode() for n, v in r.headers}
            for r in dead}


def setup_worker(database_url, kafka_config, make_topic, cpu_detector, textile_files, blobs):
    config = WorkerConfig(frames_topic=make_topic(partitions=1), verdicts_topic=make_topic(),
                          dlq_topic=make_topic(), batch_size=4, batch_wait_ms=100,
                          limits=LIMITS)
    factory = make_session_factory(make_engine(database_url))
    add_textile_pool(factory, textile_files, cpu_detector)
    transport = KafkaTransport(kafka_config)
    registry = CollectorRegistry()
    consumer = transport.consumer([config.frames_topic],
                                  group_id=f"workers-{uuid.uuid4().hex[:8]}")
    producer = transport.producer()
    worker = InferenceWorker(consumer=consumer, producer=producer, session_factory=factory,
                             detector=cpu_detector, config=config,
                             metrics=WorkerMetrics(registry), blob_store=blobs)
    return config, factory, transport, registry, consumer, producer, worker


def send_interleaved(producer, config, examples, goods):
    """bad, good, bad, good, ... on the one partition; returns (kind, frame|None) in order."""
    sequence = []
    for (kind, (value, _, _)), frame in zip(examples.items(), goods, strict=False):
        producer.send(config.frames_topic, key=f"bad-{kind}".encode(), value=value)
        producer.send(config.frames_topic, key=frame.key, value=frame.encode())
        sequence += [(kind, None), ("good", frame)]
    producer.flush()
    return sequence


def good_frames(textile_files, count):
    images = [p.read_bytes() for p in textile_files["nominal"][60:66]]
    return [FrameEnvelope(camera_id="cam-1", frame_id=f"g-{i}", product="textile",
                          captured_at=datetime.now(UTC), image=images[i % len(images)])
            for i in range(count)]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_each_issue_example_is_one_dead_letter_and_the_next_frame_is_judged(
    database_url, kafka_config, make_topic, cpu_detector, textile_files, tmp_path,
    audited_opens
):
    store, outside = tmp_path / "store", tmp_path / "outside"
    (store / "ab").mkdir(parents=True)
    outside.mkdir()
    jpeg = textile_files["nominal"][60].read_bytes()
    (outside / "x.jpg").write_bytes(jpeg)  # "with its hash": a checksum would match
    examples = issue_examples(store, outside, jpeg)
    config, factory, transport, registry, consumer, producer, worker = setup_worker(
        database_url, kafka_config, make_topic, cpu_detector, textile_files,
        LocalBlobStore(store))
    sequence = send_interleaved(producer, config, examples,
                                good_frames(textile_files, len(examples)))

    audited_opens.clear()  # from here on, every open is the worker's (or the clients')
    alive, failure = run_worker(worker, registry, len(sequence))
    consumer.close()

    assert failure == []
    assert alive
    assert registry.get_sample_value("agpt_frames_consumed_total") == len(sequence)
    dead = judged_after_each(sequence, config, factory, transport, examples)
    for kind, (_, reason, field) in examples.items():
        assert (dead[kind]["reason"], dead[kind]["field"]) == (reason, field), (kind, dead[kind])
    # Not-in-store answers do not depend on whether the file exists.
    assert dead["outside_exists"]["error"].replace("x.jpg", "?") == \
        dead["outside_missing"]["error"].replace("y.jpg", "?")
    forbidden = (str(outside), "/etc/shadow", "/proc/self/environ", "/dev/zero")
    assert [p for p in audited_opens if any(f in p for f in forbidden)] == []
    assert registry.get_sample_value("agpt_db_write_failures_total") == 0
    producer.close()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_with_the_envelope_limits_off_the_database_refusal_dead_letters_only_the_offender(
    database_url, kafka_config, make_topic, cpu_detector, textile_files, monkeypatch
):
    # Drift simulated: the decoder lets through what the columns cannot hold.
    for name in ("check_text_field", "check_metadata", "check_captured_at"):
        monkeypatch.setattr(f"ingest.envelope.{name}", lambda *args: None)
    jpeg = textile_files["nominal"][60].read_bytes()
    examples = {
        "nul_camera_id": (raw(header(camera_id="cam\x00-1"), jpeg), "", ""),
        "camera_id_200": (raw(header(camera_id="c" * 200), jpeg), "22001", ""),
        "metadata_nan": (raw(header(metadata={"v": float("nan")}), jpeg), "22P02", ""),
        "metadata_nul": (raw(header(metadata={"lot": "a\u0000b"}), jpeg), "22P05", ""),
        "surrogate_product": (raw(header(product="text\udc80ile"), jpeg), "", ""),
    }
    config, factory, transport, registry, consumer, producer, worker = setup_worker(
        database_url, kafka_config, make_topic, cpu_detector, textile_files, None)
    sequence = send_interleaved(producer, config, examples,
                                good_frames(textile_files, len(examples)))

    alive, failure = run_worker(worker, registry, len(sequence))
    consumer.close()

    assert failure == []
    assert alive
    dead = judged_after_each(sequence, config, factory, transport, examples)
    for kind, (_, sqlstate, _) in examples.items():
        headers = dead[kind]
        assert headers["reason"] == "db_rejected", (kind, headers)
        if sqlstate:
            assert headers["sqlstate"] == sqlstate, (kind, headers)
        assert headers["error_class"], kind
        json.dumps(headers)  # every header decodes as text
    rejected = sum(v for k, v in _samples(registry, "agpt_db_rejections_total"))
    assert rejected == len(examples)
    assert registry.get_sample_value("agpt_db_write_failures_total") == 0
    producer.close()


def _samples(registry, name):
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == name:
                yield sample.labels, sample.value
