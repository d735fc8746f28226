"""The worker with the S3 blob store (moto's S3 server on loopback): kept images, claim checks
read by URI, and a store outage that pauses the worker without losing a frame."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from inference.health import Readiness
from inference.metrics import WorkerMetrics
from inference.worker import InferenceWorker, WorkerConfig
from ingest.blobstore import open_blob_store
from ingest.envelope import sha256_hex
from ingest.sources import frames_from_files
from ingest.transport.memory import InProcessBroker
from storage.models import Frame
from tests.fixtures.processes import TcpProxy, wait_for
from tests.fixtures.s3 import S3Location

pytestmark = pytest.mark.slow
CONFIG = WorkerConfig(batch_size=4, batch_wait_ms=20, retry_initial_s=0.05, retry_max_s=0.2,
                      store_images="all")


@pytest.fixture
def session_factory(sqlite_textile_pool):
    return sqlite_textile_pool


@pytest.fixture
def proxy(s3_location: S3Location):
    host, port = s3_location.endpoint_url.removeprefix("http://").split(":")
    running = TcpProxy(host, int(port)).start()
    yield running
    running.close()


def _store(s3_location: S3Location, proxy: TcpProxy):
    return open_blob_store(s3_location.location,
                           **s3_location.options(f"http://127.0.0.1:{proxy.port}"))


def _worker(broker, session_factory, detector, store, readiness=None, registry=None):
    return InferenceWorker(
        consumer=broker.consumer([CONFIG.frames_topic], group_id="workers"),
        producer=broker.producer(), session_factory=session_factory, detector=detector,
        config=CONFIG, metrics=WorkerMetrics(registry or CollectorRegistry()),
        readiness=readiness, blob_store=store,
    )


def _frame_rows(session_factory):
    with session_factory() as session:
        return {row.frame_id: row for row in session.execute(
            select(Frame.frame_id, Frame.image, Frame.image_uri, Frame.image_sha256))}


def test_kept_images_go_to_s3_and_claim_checks_are_read_by_uri(
        cpu_detector, session_factory, textile_files, s3_location, proxy):
    store = _store(s3_location, proxy)
    broker = InProcessBroker()
    paths = textile_files["nominal"][10:12]
    inline, claimed = frames_from_files(paths, product="textile", camera_id="cam-s3")
    claimed_uri = store.put(claimed.image)
    claimed = replace(claimed, image=None, image_uri=claimed_uri,
                      image_sha256=sha256_hex(paths[1].read_bytes()))
    for frame in (inline, claimed):
        broker.producer().send(CONFIG.frames_topic, key=frame.key, value=frame.encode())

    worker = _worker(broker, session_factory, cpu_detector, store)
    assert worker.step().verdicts == 2

    rows = _frame_rows(session_factory)
    assert rows[claimed.frame_id].image_uri == claimed_uri  # the claim check is the kept image
    kept = rows[inline.frame_id]
    assert kept.image is None  # no image bytes in the database
    assert kept.image_uri.startswith(f"s3://{s3_location.bucket}/frames/")
    assert kept.image_sha256 == sha256_hex(paths[0].read_bytes())
    assert store.read(kept.image_uri, max_bytes=10**7) == paths[0].read_bytes()
    assert broker.read(CONFIG.dlq_topic, 0, 10) == []


def test_claim_check_outside_the_store_is_a_dead_letter(
        cpu_detector, session_factory, textile_files, s3_location, proxy):
    store = _store(s3_location, proxy)
    broker = InProcessBroker()
    frame = next(frames_from_files(textile_files["nominal"][12:13], product="textile",
                                   camera_id="cam-s3"))
    foreign = replace(frame, image=None, image_uri=f"s3://other-{s3_location.bucket}/x.png",
                      image_sha256="0" * 64)
    broker.producer().send(CONFIG.frames_topic, key=foreign.key, value=foreign.encode())

    _worker(broker, session_factory, cpu_detector, store).step()

    [letter] = broker.read(CONFIG.dlq_topic, 0, 10)
    # Issue 10: one reason for "not in the store", whatever lies (or not) at that URI.
    assert dict(letter.headers)["reason"] == b"not_in_store"


def test_store_outage_pauses_the_worker_and_loses_nothing(
        cpu_detector, session_factory, textile_files, s3_location, proxy):
    store = _store(s3_location, proxy)
    broker = InProcessBroker()
    frames = list(frames_from_files(textile_files["nominal"][14:20], product="textile",
                                    camera_id="cam-out"))
    # Half the frames are claim checks in the store (read by the worker), half carry bytes
    # (kept by the worker into the store): an outage hits both paths.
    frames = [replace(f, image=None, image_uri=store.put(f.image),
                      image_sha256=sha256_hex(f.image)) if i % 2 else f
              for i, f in enumerate(frames)]
    registry = CollectorRegistry()
    readiness = Readiness("consumer")
    worker = _worker(broker, session_factory, cpu_detector, store, readiness, registry)
    proxy.down()
    for frame in frames:
        broker.producer().send(CONFIG.frames_topic, key=frame.key, value=frame.encode())
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: "blob_store" in readiness.failing(), timeout_s=60,
                 what="readiness reports the blob store down")
        time.sleep(1.0)  # several retries while down
        failures = registry.get_sample_value("agpt_blob_store_failures_total")
        assert failures is not None
        assert failures >= 2
        assert _frame_rows(session_factory) == {}
        assert broker.committed("workers", CONFIG.frames_topic) == 0

        proxy.up()
        wait_for(lambda: len(_frame_rows(session_factory)) == len(frames), timeout_s=120,
                 what="every frame stored after the store is back")
        wait_for(lambda: readiness.ready, timeout_s=30, what="readiness back")
    finally:
        stop.set()
        thread.join(timeout=60)
    rows = _frame_rows(session_factory)
    assert sorted(rows) == sorted(f.frame_id for f in frames)
    assert all(row.image is None for row in rows.values())
    assert all(row.image_uri.startswith("s3://") for row in rows.values())
    assert broker.read(CONFIG.dlq_topic, 0, 10) == []
    assert broker.committed("workers", CONFIG.frames_topic) == len(frames)
