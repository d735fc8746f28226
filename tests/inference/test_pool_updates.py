"""Pool changes reach every worker live: events, publishing, the worker hook, the CLI."""

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from agpt.cli import main
from inference.metrics import WorkerMetrics
from inference.pool import add_references, remove_reference
from inference.pool_updates import PoolUpdates, open_pool_updates
from inference.worker import InferenceWorker, WorkerConfig
from ingest.pool_events import PoolEvent, PoolEventError, publish_pool_change
from ingest.sources import frames_from_files
from ingest.transport.memory import InProcessBroker
from storage import repositories
from storage.engine import make_engine, make_session_factory
from storage.migrate import upgrade

CONFIG = WorkerConfig(batch_size=4, batch_wait_ms=20, retry_initial_s=0.01)
POOL_TOPIC = "agpt.pool"


@pytest.fixture
def database_file_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'pool.sqlite'}"
    upgrade(url)
    return url


@pytest.fixture
def session_factory(database_file_url):
    return make_session_factory(make_engine(database_file_url))


def unique_product():
    # The session's detector is shared: a product of its own keeps other tests' pools apart.
    return f"textile-{uuid.uuid4().hex[:8]}"


# -- events ---------------------------------------------------------------------------------
def test_pool_event_round_trip():
    event = PoolEvent(product="textile", pool_version=7, at=datetime(2026, 1, 2, tzinfo=UTC))
    decoded = PoolEvent.decode(event.encode())
    assert decoded == event
    assert decoded.action == "changed"
    assert event.key == b"textile"


@pytest.mark.parametrize(("value", "field_name"), [
    ({"action": "changed", "pool_version": 1, "at": "2026-01-01T00:00:00+00:00"}, "product"),
    ({"product": "", "action": "changed", "pool_version": 1,
      "at": "2026-01-01T00:00:00+00:00"}, "product"),
    ({"product": "p", "action": "deleted", "pool_version": 1,
      "at": "2026-01-01T00:00:00+00:00"}, "action"),
    ({"product": "p", "action": "changed", "pool_version": "3",
      "at": "2026-01-01T00:00:00+00:00"}, "pool_version"),
    ({"product": "p", "action": "changed", "pool_version": -1,
      "at": "2026-01-01T00:00:00+00:00"}, "pool_version"),
    ({"product": "p", "action": "changed", "pool_version": True,
      "at": "2026-01-01T00:00:00+00:00"}, "pool_version"),
    ({"product": "p", "action": "changed", "pool_version": 1}, "at"),
    ({"product": "p", "action": "changed", "pool_version": 1, "at": "yesterday"}, "at"),
    ({"product": "p", "action": "changed", "pool_version": 1, "at": "2026-01-01T00:00:00"},
     "at"),
])
def test_bad_pool_event_names_the_field(value, field_name):
    with pytest.raises(PoolEventError, match=field_name) as caught:
        PoolEvent.decode(json.dumps(value).encode())
    assert caught.value.field_name == field_name


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_pool_event_that_is_not_a_json_object_is_a_value_error(raw):
    with pytest.raises(ValueError, match="pool event"):
        PoolEvent.decode(raw)


def test_pool_updates_collapse_versions_and_skip_bad_events():
    broker = InProcessBroker()
    producer = broker.producer()
    for version in (3, 5, 4):
        publish_pool_change(producer=producer, topic=POOL_TOPIC, product="a", version=version)
    producer.send(POOL_TOPIC, key=b"b", value=b"garbage")
    publish_pool_change(producer=producer, topic=POOL_TOPIC, product="b", version=1)
    updates = PoolUpdates(broker.consumer([POOL_TOPIC], group_id="g"))
    started = time.monotonic()
    assert updates.changed() == {"a": 5, "b": 1}
    assert updates.changed() == {}  # nothing new; and no wait for it
    assert time.monotonic() - started < 1.0
    assert updates.rejected == 1
    assert broker.read(POOL_TOPIC, 0, 1)[0].key == b"a"


def test_every_worker_sees_every_pool_event_in_process():
    broker = InProcessBroker()
    first, second = (open_pool_updates(broker, topic=POOL_TOPIC) for _ in range(2))
    publish_pool_change(producer=broker.producer(), topic=POOL_TOPIC, product="p", version=2)
    assert first.changed() == {"p": 2}
    assert second.changed() == {"p": 2}


def test_pool_version_grows_with_every_change(session_factory, textile_files):
    product = unique_product()
    with session_factory() as session:
        assert repositories.pool_version(session=session, product=product) == 0
    images = [p.read_bytes() for p in textile_files["nominal"][:2]]
    added = add_references(session_factory=session_factory, product=product, images=images,
                           added_by="test")
    assert added.references == 2
    removed = remove_reference(session_factory=session_factory, entry_id=added.entry_ids[0],
                               actor="test")
    again = add_references(session_factory=session_factory, product=product,
                           images=images[:1], added_by="test")
    assert 0 < added.version < removed.version < again.version
    assert (removed.references, again.references) == (1, 2)


def test_cli_pool_add_list_remove_in_process(session_factory, database_file_url, tmp_path,
                                             textile_files, capsys):
    url = database_file_url
    files = [str(p) for p in textile_files["nominal"][:2]]
    assert main(["pool", "add", "--product", "bolts", "--by", "ana", *files,
                 "--database-url", url]) == 0
    assert "2 active references" in capsys.readouterr().out
    with session_factory() as session:
        assert len(repositories.list_pool_images(session=session, product="bolts")) == 2
    assert main(["pool", "remove", "1", "--database-url", url]) == 0
    assert main(["pool", "list", "--product", "bolts", "--database-url", url]) == 0
    listing = capsys.readouterr().out
    assert "ana" in listing
    assert "\n       1 " not in listing
    assert "\n       2 " in listing
    assert main(["pool", "remove", "99", "--database-url", url]) == 2
    (tmp_path / "notes.txt").write_text("not an image")
    assert main(["pool", "add", "--product", "bolts", str(tmp_path / "notes.txt"),
                 "--database-url", url]) == 2
    assert "nothing added" in capsys.readouterr().err


def test_cli_pool_add_encodes_each_image_once(database_file_url, textile_files, monkeypatch):
    import inference.pool

    calls = []
    real = inference.pool.to_png
    monkeypatch.setattr(inference.pool, "to_png", lambda data: calls.append(1) or real(data))
    files = [str(p) for p in textile_files["nominal"][:3]]
    assert main(["pool", "add", "--product", "nuts", *files,
                 "--database-url", database_file_url]) == 0
    assert len(calls) == 3


# -- the worker reloads a changed pool before its next batch -------------------------------
def make_worker(broker, session_factory, detector, pool_updates):
    return InferenceWorker(
        consumer=broker.consumer([CONFIG.frames_topic], group_id="workers"),
        producer=broker.producer(), session_factory=session_factory, detector=detector,
        config=CONFIG, metrics=WorkerMetrics(CollectorRegistry()), pool_updates=pool_updates,
    )


def judge(worker, broker, paths, product, camera):
    """Send ``paths`` as frames, let the worker process them; their verdicts by frame id."""
    producer = broker.producer()
    frames = list(frames_from_files(paths, product=product, camera_id=camera))
    for frame in frames:
        producer.send(CONFIG.frames_topic, key=frame.key, value=frame.encode())
    seen = 0
    for _ in range(50):
        outcome = worker.step()
        seen += outcome.consumed if outcome else 0
        if seen >= len(frames):
            break
    with worker.session_factory() as session:
        views = {v.frame_id: v for v in repositories.list_verdicts(session=session, limit=500)
                 if v.camera_id == camera}
    assert sorted(views) == sorted(f.frame_id for f in frames)
    return [views[f.frame_id] for f in frames]


def add_and_announce(broker, session_factory, product, paths):
    # The code path of `agpt pool add`: commit, then publish.
    return add_references(session_factory=session_factory, product=product,
                          images=[p.read_bytes() for p in paths], added_by="test",
                          producer=broker.producer(), topic=POOL_TOPIC)


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_pool_update_changes_references_for_next_frames(cpu_detector, session_factory,
                                                         textile_files):
    product, broker = unique_product(), InProcessBroker()
    nominal = textile_files["nominal"]
    add_and_announce(broker, session_factory, product, nominal[:3])
    updates = open_pool_updates(broker, topic=POOL_TOPIC)
    worker = make_worker(broker, session_factory, cpu_detector, updates)

    (before,) = judge(worker, broker, nominal[500:501], product, "cam-before")
    change = add_and_announce(broker, session_factory, product, nominal[3:5])
    (after,) = judge(worker, broker, nominal[501:502], product, "cam-after")

    assert before.details["references"] == 3
    assert after.details["references"] == 5
    assert before.details["pool_version"] < after.details["pool_version"] == change.version
    assert after.details["local_threshold"] != before.details["local_threshold"]
    assert after.details["global_threshold"] != before.details["global_threshold"]


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_confirmed_new_normal_is_no_longer_flagged(cpu_detector, session_factory,
                                                   textile_files):
    # The product changed supplier: its fabric now looks like the "global" defect images.
    # Once the operator puts a few of them into the pool, that look is the new normal.
    product, broker = unique_product(), InProcessBroker()
    add_and_announce(broker, session_factory, product, textile_files["nominal"][:3])
    updates = open_pool_updates(broker, topic=POOL_TOPIC)
    worker = make_worker(broker, session_factory, cpu_detector, updates)
    new_look = textile_files["global"]

    before = judge(worker, broker, new_look[20:23], product, "cam-before")
    add_and_announce(broker, session_factory, product, new_look[10:14])
    after = judge(worker, broker, new_look[20:23], product, "cam-after")

    # Scores are log(p) / log(alpha) of the calibrated tail probability (1.0 = threshold).
    for old, new in zip(before, after, strict=True):
        assert old.anomalous
        assert old.score > 1.0
        assert not new.anomalous
        assert new.score < 0.7 * old.score
        assert new.details["references"] == 7


# -- Kafka -----------------------------------------------------------------------------------
def step_until(worker, condition, *, timeout_s, what):
    """Run worker steps until ``condition()`` holds (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.step()
        if condition():
            return
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_pool_update_reaches_workers_over_kafka(kafka_config, make_topic, cpu_detector,
                                                session_factory, textile_files):
    from ingest.transport.kafka import KafkaTransport

    config = WorkerConfig(frames_topic=make_topic(), verdicts_topic=make_topic(),
                          dlq_topic=make_topic(), batch_size=4, batch_wait_ms=200)
    pool_topic = f"test-pool-{uuid.uuid4().hex}"
    transport = KafkaTransport(kafka_config)
    # Tansu accepts cleanup.policy=compact
    assert transport.ensure_topics([pool_topic], partitions=1, compacted=True)
    producer = transport.producer()
    product, nominal = unique_product(), textile_files["nominal"]

    def add(paths):  # the code path of `agpt pool add`: commit, then publish
        return add_references(session_factory=session_factory, product=product,
                              images=[p.read_bytes() for p in paths], added_by="test",
                              producer=producer, topic=pool_topic)

    def verdict(camera):
        with session_factory() as session:
            views = [v for v in repositories.list_verdicts(session=session, limit=50)
                     if v.camera_id == camera]
        return views[0] if views else None

    def send(path, camera):
        (frame,) = frames_from_files([path], product=product, camera_id=camera)
        producer.send(config.frames_topic, key=frame.key, value=frame.encode())
        producer.flush()

    add(nominal[:3])
    group = f"workers-{uuid.uuid4().hex[:8]}"
    consumer = transport.consumer([config.frames_topic], group_id=group)
    updates = open_pool_updates(transport, topic=pool_topic)
    other_worker = open_pool_updates(transport, topic=pool_topic)
    worker = InferenceWorker(consumer=consumer, producer=producer,
                             session_factory=session_factory, detector=cpu_detector,
                             config=config, metrics=WorkerMetrics(CollectorRegistry()),
                             pool_updates=updates)
    seen: dict[str, int] = {}
    try:
        send(nominal[500], "cam-before")
        step_until(worker, lambda: verdict("cam-before") is not None, timeout_s=90,
                   what="the first verdict")
        change = add(nominal[3:5])
        # Live: the worker reloads between batches, before any further frame arrives.
        step_until(worker, lambda: cpu_detector.product(product).version == change.version,
                   timeout_s=30, what="the worker to reload the changed pool")
        send(nominal[501], "cam-after")
        step_until(worker, lambda: verdict("cam-after") is not None, timeout_s=60,
                   what="the verdict after the change")
        deadline = time.monotonic() + 30
        while seen.get(product) != change.version and time.monotonic() < deadline:
            seen.update(other_worker.changed())
            time.sleep(0.05)  # poll interval: changed() never waits
    finally:
        consumer.close()
        updates.close()
        other_worker.close()
        producer.close()
    assert seen.get(product) == change.version, "the second worker never saw the event"
    before, after = verdict("cam-before"), verdict("cam-after")
    assert (before.details["references"], after.details["references"]) == (3, 5)
    assert after.details["pool_version"] == change.version
    assert after.details["local_threshold"] != before.details["local_threshold"]


@pytest.mark.kafka
def test_cli_pool_add_commits_then_announces_on_kafka(kafka_config, session_factory,
                                                      database_file_url, textile_files,
                                                      monkeypatch, capsys):
    pool_topic = f"test-pool-{uuid.uuid4().hex}"
    monkeypatch.setenv("AGPT_POOL_TOPIC", pool_topic)
    url = database_file_url
    assert main(["pool", "add", "--product", "bolts", str(textile_files["nominal"][0]),
                 "--database-url", url, "--kafka-bootstrap", kafka_config.bootstrap]) == 0
    assert f"announced on {pool_topic}" in capsys.readouterr().out
    from ingest.transport.kafka import KafkaTransport

    reader = KafkaTransport(kafka_config).broadcast_consumer([pool_topic])
    records = []
    try:
        deadline = time.monotonic() + 30
        while not records and time.monotonic() < deadline:
            records = reader.poll(max_records=10, timeout_s=0.5)
    finally:
        reader.close()
    assert records, "no pool event within 30 s"
    event = PoolEvent.decode(records[0].value)
    with session_factory() as session:
        assert event.pool_version == repositories.pool_version(session=session, product="bolts")
    assert (records[0].key, event.product) == (b"bolts", "bolts")
