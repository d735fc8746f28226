"""Malformed messages through the real path: Tansu → worker (CPU model) → PostgreSQL / DLQ.

Twenty-one kinds of broken frame message (16 reason codes) are interleaved with good frames
on a two-partition topic while a real worker runs in a thread. Each broken message must land
on the dead-letter topic exactly once, unchanged, with a reason, the error class, the field,
a sentence a person can act on and the original topic/partition/offset; every good frame must
get exactly one verdict; the worker must keep going and commit past everything.
"""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import time
import uuid
import zlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from PIL import Image
from prometheus_client import CollectorRegistry

from inference.images import ImageLimits
from inference.metrics import WorkerMetrics
from inference.worker import InferenceWorker, WorkerConfig
from ingest.blobstore import LocalBlobStore
from ingest.envelope import MAGIC, FrameEnvelope, sha256_hex
from ingest.sources import frames_from_files
from ingest.transport.base import Record
from ingest.transport.kafka import KafkaTransport
from storage import repositories
from storage.engine import make_engine, make_session_factory
from tests.fixtures.pools import add_textile_pool

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

# Small enough that an oversized message still fits Kafka's default 1 MiB request.
LIMITS = ImageLimits(max_bytes=256 * 1024)
WAIT_S = 120.0


def header(**fields: object) -> dict[str, object]:
    """A valid frame header; a field given as None is left out."""
    base: dict[str, object] = {"camera_id": "cam-bad", "frame_id": uuid.uuid4().hex,
                               "product": "textile",
                               "captured_at": datetime.now(UTC).isoformat()}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def raw(fields: dict[str, object] | bytes, image: bytes = b"", version: int = 1) -> bytes:
    """Wire bytes with whatever header and version, bypassing the envelope's own checks."""
    body = fields if isinstance(fields, bytes) else json.dumps(fields).encode()
    return struct.pack(">4sBI", MAGIC, version, len(body)) + body + image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_bomb(side: int = 20000) -> bytes:
    """A valid 1-bit PNG of side² black pixels: 400 M pixels (50 MB raw) in ~50 KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte "none" + packed bits
    squeeze = zlib.compressobj(9)
    idat = b"".join(squeeze.compress(row) for _ in range(side)) + squeeze.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def malformed(tmp_path: Path, jpeg: bytes) -> dict[str, tuple[bytes, str, str]]:
    """kind → (message value, expected reason, expected field); the blob store is tmp_path."""
    textile_png = png(Image.open(io.BytesIO(jpeg)))
    other = tmp_path / "swapped.jpg"
    other.write_bytes(jpeg[:-10] + b"\x00" * 10)  # the blob changed after ingest
    oversized = b"\x89PNG\r\n\x1a\n" + os.urandom(400_000)
    return {
        "empty": (b"", "empty", ""),
        "http_request": (b"GET /frames HTTP/1.1\r\nHost: line-3\r\n\r\n", "not_an_envelope", ""),
        "schema_v7": (raw(header(), jpeg, version=7), "unknown_schema_version",
                      "schema_version"),
        "header_cut": (struct.pack(">4sBI", MAGIC, 1, 5000) + b'{"camera_id"', "truncated", ""),
        "header_not_json": (raw(b"{camera_id: cam-1}", jpeg), "bad_header", ""),
        "header_nested": (raw(b"[" * 50_000, jpeg), "bad_header", ""),
        "no_product": (raw(header(product=None), jpeg), "missing_field", "product"),
        "camera_id_number": (raw(header(camera_id=42), jpeg), "bad_field", "camera_id"),
        "captured_at_garbage": (raw(header(captured_at="yesterday"), jpeg), "bad_field",
                                "captured_at"),
        "image_uri_number": (raw(header(image_uri=123, image_sha256=sha256_hex(jpeg))),
                             "bad_field", "image_uri"),
        "text_not_image": (raw(header(), b"hello, these are not pixels"), "not_an_image",
                           "image"),
        "truncated_png": (raw(header(), textile_png[: len(textile_png) // 2]),
                          "truncated_image", "image"),
        "tiny_image": (raw(header(), png(Image.new("RGB", (8, 8)))), "too_small", "image"),
        "oversized": (raw(header(), oversized), "oversized", "message"),
        "pixel_bomb": (raw(header(), png_bomb()), "too_many_pixels", "image"),
        "uri_s3": (raw(header(image_uri="s3://line-3/frame.jpg",
                              image_sha256=sha256_hex(jpeg))), "bad_uri", "image_uri"),
        "uri_missing_file": (raw(header(image_uri=(tmp_path / "gone.jpg").as_uri(),
                                        image_sha256=sha256_hex(jpeg))), "not_in_store",
                             "image_uri"),
        "uri_directory": (raw(header(image_uri=(tmp_path / "sub").as_uri(),
                                     image_sha256=sha256_hex(jpeg))), "not_in_store",
                          "image_uri"),
        "sha_mismatch_inline": (raw(header(image_sha256=sha256_hex(b"other")), jpeg),
                                "checksum_mismatch", "image_sha256"),
        "sha_mismatch_claim_check": (raw(header(image_uri=other.as_uri(),
                                                image_sha256=sha256_hex(jpeg))),
                                     "checksum_mismatch", "image_sha256"),
        "unknown_product": (FrameEnvelope(camera_id="cam-bad", frame_id="p-1", product="bolts",
                                          captured_at=datetime.now(UTC), image=jpeg).encode(),
                            "unknown_product", "product"),
    }


def read_all(transport: KafkaTransport, topics: list[str], count: int) -> list[Record]:
    """Every record of ``topics`` (a fresh group), polling until ``count`` or the bound."""
    reader = transport.consumer(topics, group_id=f"reader-{uuid.uuid4().hex[:8]}")
    records: list[Record] = []
    deadline = time.monotonic() + 30
    try:
        while len(records) < count and time.monotonic() < deadline:
            records += reader.poll(max_records=100, timeout_s=0.5)
        records += reader.poll(max_records=100, timeout_s=1.0)  # anything beyond ``count``
    finally:
        reader.close()
    return records


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_every_kind_of_malformed_message_reaches_the_dlq_while_good_frames_flow(
    database_url, kafka_config, make_topic, cpu_detector, textile_files, tmp_path
):
    config = WorkerConfig(frames_topic=make_topic(partitions=2), verdicts_topic=make_topic(),
                          dlq_topic=make_topic(), batch_size=4, batch_wait_ms=100,
                          limits=LIMITS)
    factory = make_session_factory(make_engine(database_url))
    add_textile_pool(factory, textile_files, cpu_detector)

    files = textile_files["nominal"][60:66] + textile_files["global"][:2]
    good = list(frames_from_files(files, product="textile", camera_id="cam-1"))
    blob = tmp_path / "claim-check.jpg"
    blob.write_bytes(files[0].read_bytes())
    good.append(FrameEnvelope(camera_id="cam-1", frame_id="claim-check", product="textile",
                              captured_at=datetime.now(UTC), image_uri=blob.as_uri(),
                              image_sha256=sha256_hex(blob.read_bytes())))
    later = list(frames_from_files(textile_files["nominal"][70:73], product="textile",
                                   camera_id="cam-2"))
    (tmp_path / "sub").mkdir()
    bad = malformed(tmp_path, files[0].read_bytes())
    assert len(bad) >= 10
    assert len({reason for _, reason, _ in bad.values()}) >= 10

    transport = KafkaTransport(kafka_config)
    producer = transport.producer()
    # Interleaved: a good frame, two broken messages, a good frame, ...
    queue = [(f.key, f.encode()) for f in good]
    broken = [(f"bad-{kind}".encode(), value) for kind, (value, _, _) in bad.items()]
    while queue or broken:
        if queue:
            key, value = queue.pop(0)
            producer.send(config.frames_topic, key=key, value=value)
        for _ in range(2):
            if broken:
                key, value = broken.pop(0)
                producer.send(config.frames_topic, key=key, value=value)
    producer.flush()

    registry = CollectorRegistry()
    group = f"workers-{uuid.uuid4().hex[:8]}"
    consumer = transport.consumer([config.frames_topic], group_id=group)
    worker = InferenceWorker(consumer=consumer, producer=producer, session_factory=factory,
                             detector=cpu_detector, config=config,
                             metrics=WorkerMetrics(registry), blob_store=LocalBlobStore(tmp_path))
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(stop)
        except BaseException as exc:  # surfaced by the assertions below
            failure.append(exc)

    thread = threading.Thread(target=run, name="worker", daemon=True)
    thread.start()

    def consumed() -> float:
        return registry.get_sample_value("agpt_frames_consumed_total") or 0.0

    def wait_for_consumed(count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while consumed() < count and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)

    wait_for_consumed(len(good) + len(bad))
    # The worker has seen every broken message: frames sent now must still get verdicts.
    for frame in later:
        producer.send(config.frames_topic, key=frame.key, value=frame.encode())
    producer.flush()
    wait_for_consumed(len(good) + len(bad) + len(later))
    still_running = thread.is_alive()
    stop.set()
    thread.join(timeout=60)
    consumer.close()

    assert failure == []
    assert still_running
    assert not thread.is_alive()
    assert consumed() == len(good) + len(bad) + len(later)

    # Exactly one verdict row per good frame, early or late.
    with factory() as session:
        views = repositories.list_verdicts(session=session, limit=1000)
    expected = sorted((f.camera_id, f.frame_id) for f in good + later)
    assert sorted((v.camera_id, v.frame_id) for v in views) == expected

    sent = {r.key: r for r in read_all(transport, [config.frames_topic],
                                       len(good) + len(bad) + len(later))}
    out = read_all(transport, [config.dlq_topic, config.verdicts_topic],
                   len(bad) + len(expected))
    verdicts = [json.loads(r.value) for r in out if r.topic == config.verdicts_topic]
    assert sorted((v["camera_id"], v["frame_id"]) for v in verdicts) == expected

    dead = [r for r in out if r.topic == config.dlq_topic]
    assert Counter(r.key for r in dead) == Counter(f"bad-{kind}".encode() for kind in bad)
    for record in dead:
        kind = record.key.decode().removeprefix("bad-")
        value, reason, field = bad[kind]
        headers = {name: data.decode() for name, data in record.headers}
        original = sent[record.key]
        assert record.value == value, kind
        assert headers["reason"] == reason, (kind, headers)
        assert headers["error_class"] == "FrameError", kind
        assert headers["field"] == field, (kind, headers)
        assert headers["original_topic"] == config.frames_topic
        assert (int(headers["original_partition"]), int(headers["original_offset"])) == (
            original.partition, original.offset), kind
        message = headers["error"]
        assert 15 <= len(message) <= 400, (kind, message)
        assert message.isprintable(), (kind, message)
        assert "Traceback" not in message
        assert field in message, (kind, message)

    reasons = Counter(reason for _, reason, _ in bad.values())
    for reason, count in reasons.items():
        assert registry.get_sample_value("agpt_dlq_messages_total", {"reason": reason}) == count
    assert registry.get_sample_value("agpt_consumer_lag_messages") == 0

    # Offsets are committed past every message, on both partitions.
    ends: dict[int, int] = {}
    for record in sent.values():
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    assert set(ends) == {0, 1}
    probe = KafkaConsumer(**kafka_config.client_settings(), group_id=group,
                          enable_auto_commit=False)
    try:
        committed = {p: probe.committed(TopicPartition(config.frames_topic, p)) for p in ends}
    finally:
        probe.close(autocommit=False)
    assert committed == ends
    producer.close()
