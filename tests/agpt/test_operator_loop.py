"""The operator's loop end to end through Tansu, PostgreSQL and a running `agpt worker`.

A frame is flagged; an engineer marks it "not a defect — add to pool" through the storage
action the dashboard calls and the dashboard's announcement client, which goes through the
assistant service onto the pool topic; the product's pool version grows, the running worker
reloads, and the same image re-sent with a new frame id is judged normal.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest
import uvicorn

from inference.assistant import Announcer, build_app
from inference.pool import add_references
from ingest.envelope import FrameEnvelope
from ingest.transport.kafka import KafkaTransport
from review.assistant_client import announce_pool_changes
from review.images import blob_store_from_env, load_frame_image
from storage.engine import make_engine, make_session_factory
from storage.migrate import upgrade
from storage.repositories import (
    QueueFilter,
    create_user,
    get_verdict,
    list_queue,
    list_verdicts,
    pool_version,
    review_verdict,
)
from tests.fixtures.database import created_postgres_database
from tests.fixtures.processes import free_port, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

PROGRESS_TIMEOUT_S = 180.0  # a worker subprocess loads torch and the model on shared cores


class NoChat:
    """The loop does not chat; the assistant serves only the pool announcement here."""

    model_id = "none"

    def stream(self, subject, turns, question):  # noqa: D102
        msg = "not called"
        raise AssertionError(msg)


@pytest.fixture
def database(postgres_admin_url, textile_files):
    """A fresh PostgreSQL database whose textile pool holds 3 nominal images."""
    with created_postgres_database(postgres_admin_url) as url:
        upgrade(url)
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        add_references(session_factory=sessions, product="textile", added_by="test",
                       images=[p.read_bytes() for p in textile_files["nominal"][:3]])
        with sessions.begin() as session:
            create_user(session=session, name="eve", password="engineer-pw", role="engineer")
        yield url, sessions
        engine.dispose()


def test_marked_normal_in_review_is_judged_normal_by_the_running_worker(
        database, kafka_config, make_topic, textile_files, cpu_detector, worker_process,
        tmp_path):
    url, sessions = database
    blobs = str(tmp_path / "blobs")  # where the worker keeps frame images
    transport = KafkaTransport(kafka_config)
    frames_topic, pool_topic = make_topic(), f"test-pool-{uuid.uuid4().hex}"
    worker = worker_process({
        "AGPT_DATABASE_URL": url, "AGPT_KAFKA_BOOTSTRAP": kafka_config.bootstrap,
        "AGPT_FRAMES_TOPIC": frames_topic, "AGPT_VERDICTS_TOPIC": make_topic(),
        "AGPT_DLQ_TOPIC": make_topic(), "AGPT_POOL_TOPIC": pool_topic,
        "AGPT_CONSUMER_GROUP": f"loop-{uuid.uuid4().hex[:8]}", "AGPT_WORKER_ID": "loop",
        "AGPT_PROFILE": "cpu-small", "AGPT_BATCH_SIZE": "1", "AGPT_BLOB_STORE": blobs,
    })
    producer = transport.producer()
    # A texture-shift defect: flagged by the pool of three nominal images.
    image = textile_files["global"][0].read_bytes()

    def send(frame_id: str) -> None:
        frame = FrameEnvelope(camera_id="cam-1", frame_id=frame_id, product="textile",
                              captured_at=datetime.now(UTC), image=image)
        producer.send(frames_topic, key=frame.key, value=frame.encode())
        producer.flush()

    def verdict_of(frame_id: str):
        with sessions() as session:
            return next((v for v in list_verdicts(session=session, limit=10)
                         if v.frame_id == frame_id), None)

    send("first")
    wait_for(lambda: verdict_of("first") is not None, timeout_s=PROGRESS_TIMEOUT_S,
             what="the first verdict", diagnose=worker.log_tail)
    first = verdict_of("first")
    assert first.anomalous, first
    with sessions() as session:
        assert [v.id for v in list_queue(session=session, filters=QueueFilter(
            review="unreviewed"))] == [first.id]
        before = pool_version(session=session, product="textile")

    # The dashboard's "Not a defect — add to pool": the image read from the blob store as the
    # Frame page reads it, one transaction, then the announcement.
    kept, why = load_frame_image(store=blob_store_from_env({"AGPT_BLOB_STORE": blobs}),
                                 inline=None, uri=first.image_uri)
    assert kept is not None, why
    with sessions.begin() as session:
        outcome = review_verdict(session=session, verdict_id=first.id, user="eve",
                                 decision="normal", add_to_pool=True, image=kept)
    assert outcome.pool_change is not None
    assert outcome.pool_change.version > before
    announcer = Announcer(session_factory=sessions, producer_factory=transport.producer,
                          topic=pool_topic, interval_s=3600)
    app = build_app(session_factory=sessions, engine_factory=NoChat, announcer=announcer,
                    image_size=224, profile="cpu-small")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout_s=30, what="the assistant")
        announced = announce_pool_changes(f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        announcer.close()
    assert announced == {"textile": outcome.pool_change.version}

    # The running worker reloads the product before its next batch.
    wait_for(lambda: f"version={outcome.pool_change.version}" in worker.log.read_text(),
             timeout_s=60, what="the worker to reload the pool", diagnose=worker.log_tail)
    send("again")
    wait_for(lambda: verdict_of("again") is not None, timeout_s=60,
             what="the re-sent frame's verdict", diagnose=worker.log_tail)
    again = verdict_of("again")
    assert not again.anomalous, again
    assert again.details["pool_version"] == outcome.pool_change.version
    assert again.score < first.score
    with sessions() as session:
        assert get_verdict(session=session, verdict_id=first.id).review_status == "normal"
    assert worker.alive()
    producer.close()
