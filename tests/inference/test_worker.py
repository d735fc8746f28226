import json
import threading
import time
from datetime import UTC, datetime

import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from inference.metrics import WorkerMetrics
from inference.worker import InferenceWorker, WorkerConfig
from ingest.envelope import FrameEnvelope
from ingest.sources import frames_from_files
from ingest.transport.memory import InProcessBroker
from storage import repositories
from storage.engine import make_engine, make_session_factory

pytestmark = pytest.mark.slow
CONFIG = WorkerConfig(batch_size=4, batch_wait_ms=20, retry_initial_s=0.01)


@pytest.fixture
def session_factory(sqlite_textile_pool):
    return sqlite_textile_pool


def make_worker(broker, session_factory, detector, registry=None, config=CONFIG, **kwargs):
    return InferenceWorker(
        consumer=broker.consumer([config.frames_topic], group_id="workers"),
        producer=broker.producer(), session_factory=session_factory, detector=detector,
        config=config, metrics=WorkerMetrics(registry or CollectorRegistry()), **kwargs,
    )


def fed_broker(paths, camera_id):
    """An in-process broker whose frames topic holds one frame per path."""
    broker = InProcessBroker()
    producer = broker.producer()
    frames = list(frames_from_files(paths, product="textile", camera_id=camera_id))
    for frame in frames:
        producer.send(CONFIG.frames_topic, key=frame.key, value=frame.encode())
    return broker, frames


def drain(worker, expected):
    seen = 0
    for _ in range(50):
        outcome = worker.step()
        seen += outcome.consumed if outcome else 0
        if seen >= expected:
            return
    pytest.fail(f"worker consumed {seen} of {expected} records")


def test_frames_become_verdicts_bad_ones_dead_letters(cpu_detector, session_factory,
                                                      textile_files):
    broker = InProcessBroker()
    producer = broker.producer()
    paths = textile_files["nominal"][10:13] + textile_files["global"][:2]
    frames = list(frames_from_files(paths, product="textile", camera_id="cam-1"))
    stranger = FrameEnvelope(camera_id="cam-1", frame_id="x-1", product="bolts",
                             captured_at=datetime.now(UTC), image=paths[0].read_bytes())
    for frame in frames[:3]:
        producer.send(CONFIG.frames_topic, key=frame.key, value=frame.encode())
    producer.send(CONFIG.frames_topic, key=b"cam-1", value=b"not an envelope")
    producer.send(CONFIG.frames_topic, key=b"cam-1", value=stranger.encode())
    for frame in frames[3:]:
        producer.send(CONFIG.frames_topic, key=frame.key, value=frame.encode())

    registry = CollectorRegistry()
    drain(make_worker(broker, session_factory, cpu_detector, registry), 7)

    with session_factory() as session:
        views = repositories.list_verdicts(session=session, limit=100)
    assert sorted(v.frame_id for v in views) == sorted(f.frame_id for f in frames)
    by_id = {v.frame_id: v for v in views}
    # Global (texture statistics) defects are caught by the image-level check.
    assert all(by_id[f.frame_id].anomalous for f in frames[3:])
    assert all(v.threshold > 0 for v in views)

    dlq = broker.read(CONFIG.dlq_topic, 0, 10)
    reasons = sorted(dict(r.headers)["reason"].decode() for r in dlq)
    assert reasons == ["not_an_envelope", "unknown_product"]
    # Verdicts are counted per product and camera (the alerts' anomaly rate and silent camera).
    labels = {"product": "textile", "camera": "cam-1"}
    counts = {outcome: registry.get_sample_value("agpt_verdicts_total",
                                                 {"outcome": outcome, **labels}) or 0
              for outcome in ("normal", "anomalous")}
    assert sum(counts.values()) == len(frames)
    assert counts["anomalous"] >= 2
    assert all(dict(r.headers)["original_topic"] == CONFIG.frames_topic.encode() for r in dlq)
    verdicts = [json.loads(r.value) for r in broker.read(CONFIG.verdicts_topic, 0, 10)]
    assert sorted(v["frame_id"] for v in verdicts) == sorted(f.frame_id for f in frames)
    # Everything committed: a new member of the group has nothing left to read.
    assert broker.consumer([CONFIG.frames_topic], group_id="workers").poll(
        max_records=10, timeout_s=0.05) == []


def test_replayed_frames_yield_no_second_verdict(cpu_detector, session_factory, textile_files):
    broker = InProcessBroker()
    producer = broker.producer()
    frames = list(frames_from_files(textile_files["nominal"][20:23], product="textile",
                                    camera_id="cam-2"))
    for _ in range(2):  # the camera (or a producer retry) sends everything twice
        for frame in frames:
            producer.send(CONFIG.frames_topic, key=frame.key, value=frame.encode())
    drain(make_worker(broker, session_factory, cpu_detector), 6)
    with session_factory() as session:
        assert repositories.count_verdicts(session=session) == 3


def test_failed_database_write_commits_nothing(cpu_detector, tmp_path, textile_files):
    # An un-migrated database: every write fails like an outage would.
    broken = make_session_factory(make_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}"))
    broker = InProcessBroker()
    frame = next(frames_from_files(textile_files["nominal"][30:31], product="textile",
                                   camera_id="cam-3"))
    broker.producer().send(CONFIG.frames_topic, key=frame.key, value=frame.encode())
    cpu_detector.set_references("textile", [Image.open(textile_files["nominal"][0])])
    stop = threading.Event()
    registry = CollectorRegistry()
    worker = make_worker(broker, broken, cpu_detector, registry)
    worker._sleep = lambda _s: stop.set()  # give up after the first failed attempt
    assert worker.step(stop) is None
    # One frame per failed attempt (the back-off stops the retries after the second).
    attempts = registry.get_sample_value("agpt_db_write_failures_total")
    assert attempts >= 1
    assert registry.get_sample_value("agpt_verdict_errors_total",
                                     {"stage": "database"}) == attempts
    assert broker.committed("workers", CONFIG.frames_topic) == 0


def test_slo_batching_keeps_the_rest_pending_and_loses_nothing(cpu_detector, session_factory,
                                                               textile_files):
    from dataclasses import replace

    broker, frames = fed_broker(textile_files["nominal"][40:50], "cam-slo")
    config = replace(CONFIG, batch_size=8, latency_slo_ms=250)
    worker = make_worker(broker, session_factory, cpu_detector, config=config)
    # The sizer learns what a batch of this size costs, then sizes the next ones.
    worker.sizer.observe(1, 0.080)
    worker.sizer.observe(8, 0.430)
    sizes = []
    for _ in range(20):
        outcome = worker.step()
        if outcome:
            sizes.append(outcome.consumed)
        if sum(sizes) >= len(frames):
            break

    assert sum(sizes) == len(frames)
    assert max(sizes) < 8  # never the whole poll at once: the SLO budget cut it
    with session_factory() as session:
        views = repositories.list_verdicts(session=session, limit=100)
    assert sorted(v.frame_id for v in views) == sorted(f.frame_id for f in frames)
    assert broker.committed("workers", config.frames_topic) == len(frames)


def test_freeze_heap_after_the_first_batch_and_still_collect_new_garbage(
        cpu_detector, session_factory, textile_files):
    import gc
    import weakref
    from dataclasses import replace

    broker, frames = fed_broker(textile_files["nominal"][50:52], "cam-gc")
    config = replace(CONFIG, batch_size=1, freeze_heap=True)
    worker = make_worker(broker, session_factory, cpu_detector, config=config)
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        assert worker.step() is not None
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # the detector's and the libraries' objects
        assert worker.step() is not None
        assert gc.get_freeze_count() <= frozen  # once per process (frozen objects may die)

        class Node:
            pass

        # The collector still reclaims cycles made after the freeze.
        a, b = Node(), Node()
        a.other, b.other = b, a
        ref = weakref.ref(a)
        del a, b
        gc.collect()
        assert ref() is None
    finally:
        gc.unfreeze()


def test_run_overlaps_writes_and_commits_every_batch_in_order(cpu_detector, session_factory,
                                                              textile_files):
    from dataclasses import replace

    broker, frames = fed_broker(textile_files["nominal"][60:66], "cam-run")
    config = replace(CONFIG, batch_size=2, commit_interval_ms=0)  # commit after every batch
    worker = make_worker(broker, session_factory, cpu_detector, config=config)
    stop = threading.Event()
    committed_before = []

    def on_batch(outcome):  # a batch is durable; its commit follows
        committed_before.append(broker.committed("workers", config.frames_topic))
        if len(committed_before) * 2 >= len(frames):
            stop.set()

    runner = threading.Thread(target=worker.run, args=(stop,), kwargs={"on_batch": on_batch})
    runner.start()
    runner.join(120)
    assert not runner.is_alive()
    assert committed_before == [0, 2, 4]  # one commit per batch, in order
    assert broker.committed("workers", config.frames_topic) == 6
    with session_factory() as session:
        assert repositories.count_verdicts(session=session, camera_id="cam-run") == 6
    verdicts = [json.loads(r.value) for r in broker.read(config.verdicts_topic, 0, 10)]
    assert [v["frame_id"] for v in verdicts] == [f.frame_id for f in frames]


def test_run_commits_durable_batches_together_while_busy_and_all_when_idle(
        cpu_detector, session_factory, textile_files):
    from dataclasses import replace

    broker, frames = fed_broker(textile_files["nominal"][66:70], "cam-lazy")
    config = replace(CONFIG, batch_size=1, commit_interval_ms=60_000)
    worker = make_worker(broker, session_factory, cpu_detector, config=config)
    stop = threading.Event()
    committed_before = []
    runner = threading.Thread(target=worker.run, args=(stop,), kwargs={
        "on_batch": lambda _o: committed_before.append(
            broker.committed("workers", config.frames_topic))})
    runner.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and broker.committed("workers", config.frames_topic) < 4:
        time.sleep(0.02)
    stop.set()
    runner.join(60)
    # Busy through the four frames: no commit until the poll found nothing, then all at once.
    assert committed_before == [0, 0, 0, 0]
    assert broker.committed("workers", config.frames_topic) == 4


def test_run_commits_nothing_past_a_batch_whose_write_gave_up(cpu_detector, session_factory,
                                                              textile_files, monkeypatch):
    from dataclasses import replace

    from sqlalchemy.exc import OperationalError

    import inference.worker as worker_module

    broker, frames = fed_broker(textile_files["nominal"][70:72], "cam-gave-up")
    real_store = worker_module.store_batch
    first = frames[0].frame_id

    def store_batch(*, session_factory, rows):
        # The first frame's write fails (an outage that lasts); any later one would succeed.
        if any(row.frame_id == first for row in rows):
            statement = "INSERT"
            raise OperationalError(statement, {}, ConnectionError("database down"))
        return real_store(session_factory=session_factory, rows=rows)

    monkeypatch.setattr(worker_module, "store_batch", store_batch)
    registry = CollectorRegistry()
    config = replace(CONFIG, batch_size=1)
    worker = make_worker(broker, session_factory, cpu_detector, registry, config=config,
                         sleep=lambda _s: time.sleep(0.02))
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,))
    runner.start()
    # The second frame has been through the model while the first one's write retries.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
            (registry.get_sample_value("agpt_batch_size_count") or 0) < 2
            or (registry.get_sample_value("agpt_db_write_failures_total") or 0) < 2):
        time.sleep(0.05)
    stop.set()
    runner.join(60)
    assert not runner.is_alive()
    # Committing the second frame would have covered the first: neither is committed.
    assert broker.committed("workers", config.frames_topic) == 0
    with session_factory() as session:
        assert repositories.count_verdicts(session=session, camera_id="cam-gave-up") == 0
