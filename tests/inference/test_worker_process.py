"""`agpt worker` as real processes on Tansu + PostgreSQL: crashes, rebalances, outages.

Every property is the same: each produced frame ends with exactly one verdict, whatever
happens to the workers or the database, and offsets never run ahead of durable verdicts.
"""

import threading
import uuid
from datetime import UTC, datetime

import pytest
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.engine import make_url

from inference.health import HealthServer, Readiness
from inference.metrics import WorkerMetrics
from inference.pool import add_references, load_product
from inference.worker import InferenceWorker, WorkerConfig
from ingest.envelope import FrameEnvelope
from ingest.transport.kafka import KafkaTransport
from storage.engine import make_engine, make_session_factory
from storage.migrate import upgrade
from tests.fixtures.database import created_postgres_database
from tests.fixtures.processes import http_status, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]

CAMERAS = [f"cam-{i}" for i in range(8)]  # keys spread over both partitions
# A worker subprocess imports torch, loads the model and joins the group: tens of seconds
# on two shared cores, more under load.
PROGRESS_TIMEOUT_S = 180.0


@pytest.fixture
def seeded_database_url(postgres_admin_url, textile_files):
    """A fresh, migrated PostgreSQL database whose pool holds 3 nominal textile images."""
    with created_postgres_database(postgres_admin_url) as url:
        upgrade(url)
        engine = make_engine(url)
        add_references(session_factory=make_session_factory(engine), product="textile",
                       added_by="test",
                       images=[p.read_bytes() for p in textile_files["nominal"][:3]])
        engine.dispose()
        yield url


@pytest.fixture
def db(seeded_database_url):
    """An engine on the seeded database for the test's own checks."""
    engine = make_engine(seeded_database_url)
    yield engine
    engine.dispose()


class FrameSource:
    """Sends uniquely numbered good textile frames, round-robin over ``CAMERAS``."""

    def __init__(self, producer, topic, textile_files):
        self.producer = producer
        self.topic = topic
        self.images = [p.read_bytes() for p in textile_files["nominal"][10:30]]
        self.sent = 0

    def send(self, count):
        for _ in range(count):
            frame = FrameEnvelope(camera_id=CAMERAS[self.sent % len(CAMERAS)],
                                  frame_id=f"f-{self.sent:05d}", product="textile",
                                  captured_at=datetime.now(UTC),
                                  image=self.images[self.sent % len(self.images)])
            self.producer.send(self.topic, key=frame.key, value=frame.encode())
            self.sent += 1
        self.producer.flush()


def verdict_counts(engine):
    """(verdicts, distinct (camera_id, frame_id) with a verdict, {worker: verdicts})."""
    with engine.connect() as connection:
        total, distinct = connection.execute(text(
            "SELECT count(*), count(DISTINCT (f.camera_id, f.frame_id)) "
            "FROM verdicts v JOIN frames f ON f.id = v.frame_pk")).one()
        per_worker = dict(connection.execute(text(
            "SELECT worker, count(*) FROM verdicts GROUP BY worker")).all())
    return int(total), int(distinct), {k: int(v) for k, v in per_worker.items()}


class CommittedOffsets:
    """Reads a group's committed offsets without joining it (no subscription)."""

    def __init__(self, bootstrap, group, topic, partitions):
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                       enable_auto_commit=False, request_timeout_ms=10000)
        self._partitions = [TopicPartition(topic, p) for p in range(partitions)]

    def total(self):
        """Sum over the partitions of the committed offset (0 where none)."""
        return sum(self._consumer.committed(tp) or 0 for tp in self._partitions)

    def close(self):
        self._consumer.close(autocommit=False)


@pytest.fixture
def line(seeded_database_url, kafka_config, make_topic, textile_files, cpu_detector):
    """Topics, a frame source and the worker environment of one test (unique group).

    Depends on ``cpu_detector`` so the converted weights are in the cache the worker
    subprocesses read.
    """
    frames_topic = make_topic(partitions=2)
    producer = KafkaTransport(kafka_config).producer()
    group = f"workers-{uuid.uuid4().hex[:8]}"
    env = {
        "AGPT_DATABASE_URL": seeded_database_url,
        "AGPT_KAFKA_BOOTSTRAP": kafka_config.bootstrap,
        "AGPT_FRAMES_TOPIC": frames_topic,
        "AGPT_VERDICTS_TOPIC": make_topic(),
        "AGPT_DLQ_TOPIC": make_topic(),
        "AGPT_CONSUMER_GROUP": group,
        "AGPT_BATCH_SIZE": "4",
        "AGPT_BATCH_WAIT_MS": "100",
    }
    yield env, FrameSource(producer, frames_topic, textile_files)
    producer.close()


def diagnose(*workers):
    return lambda: "\n".join(w.log_tail() for w in workers)


def test_kill_9_mid_stream_loses_and_duplicates_nothing(line, db, worker_process):
    env, source = line
    source.send(60)
    first = worker_process({**env, "AGPT_WORKER_ID": "first"})
    wait_for(lambda: verdict_counts(db)[0] >= 8, timeout_s=PROGRESS_TIMEOUT_S,
             interval_s=0.05, what="the first worker's verdicts", diagnose=diagnose(first))
    first.kill()  # mid-stream: verdicts may be durable whose offsets are not committed
    source.send(20)

    second = worker_process({**env, "AGPT_WORKER_ID": "second"})
    wait_for(lambda: verdict_counts(db)[0] >= source.sent, timeout_s=PROGRESS_TIMEOUT_S,
             what=f"{source.sent} verdicts", diagnose=diagnose(first, second))
    total, distinct, per_worker = verdict_counts(db)
    assert total == distinct == source.sent
    assert per_worker["second"] > 0
    assert second.status("/readyz") == 200
    assert second.terminate() == 0, second.log_tail()
    assert verdict_counts(db)[0] == source.sent


def test_two_workers_share_partitions_and_one_leaving_loses_nothing(line, db, worker_process):
    env, source = line
    stop_producing = threading.Event()

    def produce_steadily():
        # Slower than one worker alone, so neither can drain the topic before the other joins.
        while not stop_producing.wait(0.5):
            source.send(2)

    a = worker_process({**env, "AGPT_WORKER_ID": "a"})
    b = worker_process({**env, "AGPT_WORKER_ID": "b"})
    producing = threading.Thread(target=produce_steadily, daemon=True)
    producing.start()
    try:
        wait_for(lambda: {"a", "b"} <= set(verdict_counts(db)[2]),
                 timeout_s=PROGRESS_TIMEOUT_S, what="verdicts from both workers",
                 diagnose=diagnose(a, b))
        assert a.terminate() == 0, a.log_tail()
        b_before = verdict_counts(db)[2]["b"]
        # b takes over a's partition: it keeps writing what is produced on both.
        wait_for(lambda: verdict_counts(db)[2]["b"] >= b_before + 12, timeout_s=90,
                 what="b taking over", diagnose=diagnose(a, b))
    finally:
        stop_producing.set()
        producing.join(timeout=30)
    source.send(8)
    wait_for(lambda: verdict_counts(db)[0] >= source.sent, timeout_s=PROGRESS_TIMEOUT_S,
             what=f"{source.sent} verdicts", diagnose=diagnose(a, b))
    total, distinct, per_worker = verdict_counts(db)
    assert total == distinct == source.sent
    assert set(per_worker) == {"a", "b"}
    assert b.terminate() == 0, b.log_tail()


def test_database_outage_commits_nothing_until_recovery(
    seeded_database_url, db, kafka_config, make_topic, textile_files, cpu_detector, tcp_proxy
):
    direct = make_url(seeded_database_url)
    proxy = tcp_proxy(direct.host or "127.0.0.1", direct.port or 5432)
    proxied = make_engine(direct.set(port=proxy.port).render_as_string(hide_password=False))
    factory = make_session_factory(proxied)
    load_product(detector=cpu_detector, session_factory=factory, product="textile")

    frames_topic = make_topic(partitions=2)
    config = WorkerConfig(frames_topic=frames_topic, verdicts_topic=make_topic(),
                          dlq_topic=make_topic(), worker_id="solo", batch_size=4,
                          batch_wait_ms=100, retry_initial_s=0.2, retry_max_s=0.5)
    transport = KafkaTransport(kafka_config)
    producer = transport.producer()
    source = FrameSource(producer, frames_topic, textile_files)
    group = f"workers-{uuid.uuid4().hex[:8]}"
    consumer = transport.consumer([frames_topic], group_id=group)
    registry = CollectorRegistry()
    readiness = Readiness("consumer")
    worker = InferenceWorker(consumer=consumer, producer=producer, session_factory=factory,
                             detector=cpu_detector, config=config,
                             metrics=WorkerMetrics(registry), readiness=readiness)
    health = HealthServer(registry=registry, readiness=readiness, port=0,
                          host="127.0.0.1").start()
    readyz = f"http://127.0.0.1:{health.port}/readyz"
    committed = CommittedOffsets(kafka_config.bootstrap, group, frames_topic, 2)
    stop = threading.Event()
    running = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    try:
        running.start()
        source.send(4)
        wait_for(lambda: committed.total() == 4, timeout_s=90,
                 what="the first batch committed")
        assert http_status(readyz) == 200

        proxy.down()
        source.send(8)
        wait_for(lambda: (registry.get_sample_value("agpt_db_write_failures_total") or 0) >= 3,
                 timeout_s=60, what="failed writes during the outage")
        assert http_status(readyz) == 503
        assert committed.total() == 4
        assert verdict_counts(db)[0] == 4

        proxy.up()
        wait_for(lambda: committed.total() == 12, timeout_s=90,
                 what="offsets committed after recovery")
        total, distinct, _ = verdict_counts(db)
        assert total == distinct == 12
        assert http_status(readyz) == 200
    finally:
        stop.set()
        running.join(timeout=60)
        health.stop()
        committed.close()
        consumer.close()
        producer.close()
        proxied.dispose()
    assert not running.is_alive()
