"""One contract for every transport: the in-process bus and Kafka are interchangeable.

The Kafka variants run against the Tansu broker of ``tests/fixtures/kafka.py``; a new
group member needs a few seconds to join, so every wait below polls up to a bound.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from ingest.transport.base import Consumer, Producer, Record, Transport
from ingest.transport.kafka import KafkaConfig, KafkaTransport, TransportError
from ingest.transport.memory import InProcessBroker
from tests.fixtures.kafka import running_tansu

WAIT_S = 20.0  # bound on any wait for records (includes a Kafka group join)
POLL_S = 0.2


@dataclass
class Bus:
    """A transport under test, its topic factory, and the clients to close afterwards."""

    transport: Transport
    new_topic: Callable[..., str]
    clients: list[Producer | Consumer] = field(default_factory=list)

    def producer(self) -> Producer:
        """Create a producer closed at teardown."""
        client = self.transport.producer()
        self.clients.append(client)
        return client

    def consumer(self, topic: str, group_id: str) -> Consumer:
        """Create a member of ``group_id`` on ``topic``, closed at teardown."""
        client = self.transport.consumer([topic], group_id=group_id)
        self.clients.append(client)
        return client


def _memory_topic(partitions: int = 1) -> str:
    # The in-process bus has one partition per topic, created on first use.
    return f"test-{uuid.uuid4().hex}"


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    """Each contract test runs once per transport; Kafka starts only when needed."""
    if request.param == "memory":
        under_test = Bus(transport=InProcessBroker(), new_topic=_memory_topic)
    else:
        config: KafkaConfig = request.getfixturevalue("kafka_config")
        under_test = Bus(
            transport=KafkaTransport(config), new_topic=request.getfixturevalue("make_topic")
        )
    yield under_test
    for client in reversed(under_test.clients):
        client.close()


def produce(producer: Producer, topic: str, values: list[bytes], key: bytes | None = None) -> None:
    """Send ``values`` in order and wait for their acknowledgement."""
    for value in values:
        producer.send(topic, value=value, key=key)
    producer.flush(timeout_s=10)


def consume(consumer: Consumer, count: int, *, wait_s: float = WAIT_S) -> list[Record]:
    """Poll until ``count`` records arrived or ``wait_s`` passed; return what arrived."""
    records: list[Record] = []
    deadline = time.monotonic() + wait_s
    while len(records) < count and time.monotonic() < deadline:
        records.extend(consumer.poll(max_records=count - len(records), timeout_s=POLL_S))
    return records


def values_of(records: list[Record]) -> list[bytes]:
    """Record values in delivery order."""
    return [r.value for r in records]


def test_round_trip_keeps_key_value_and_headers(bus: Bus) -> None:
    topic = bus.new_topic()
    producer = bus.producer()
    producer.send(
        topic, value=b"\x00frame\xff", key=b"cam-1", headers=[("schema", b"v1"), ("trace", b"")]
    )
    producer.flush(timeout_s=10)

    [record] = consume(bus.consumer(topic, "g"), 1)

    assert (record.topic, record.partition, record.offset) == (topic, 0, 0)
    assert record.key == b"cam-1"
    assert record.value == b"\x00frame\xff"
    assert record.headers == (("schema", b"v1"), ("trace", b""))
    assert record.timestamp_ms is not None


def test_records_of_one_key_keep_their_order(bus: Bus) -> None:
    topic = bus.new_topic(partitions=2)
    producer = bus.producer()
    sent = [(f"cam-{i % 3}".encode(), f"{i}".encode()) for i in range(30)]
    for key, value in sent:
        producer.send(topic, value=value, key=key)
    producer.flush(timeout_s=10)

    records = consume(bus.consumer(topic, "g"), len(sent))

    assert len(records) == len(sent)
    for key in {k for k, _ in sent}:
        assert [r.value for r in records if r.key == key] == [v for k, v in sent if k == key]


def test_uncommitted_records_are_redelivered_to_the_next_member(bus: Bus) -> None:
    topic = bus.new_topic()
    sent = [b"a", b"b", b"c"]
    produce(bus.producer(), topic, sent)
    first = bus.consumer(topic, "workers")
    assert values_of(consume(first, len(sent))) == sent

    first.close()  # crashed before its writes were durable: nothing committed

    assert values_of(consume(bus.consumer(topic, "workers"), len(sent))) == sent


def test_next_member_resumes_after_the_committed_offset(bus: Bus) -> None:
    topic = bus.new_topic()
    sent = [b"a", b"b", b"c", b"d", b"e"]
    produce(bus.producer(), topic, sent)
    first = bus.consumer(topic, "workers")
    records = consume(first, len(sent))
    assert values_of(records) == sent

    first.commit(records[:2])
    first.close()

    second = bus.consumer(topic, "workers")
    assert values_of(consume(second, 3)) == [b"c", b"d", b"e"]
    assert second.poll(max_records=10, timeout_s=0.5) == []


def test_each_group_sees_every_record(bus: Bus) -> None:
    topic = bus.new_topic()
    sent = [b"a", b"b", b"c"]
    produce(bus.producer(), topic, sent)
    inference = bus.consumer(topic, "inference")
    archive = bus.consumer(topic, "archive")

    seen = consume(inference, len(sent))
    inference.commit(seen)  # one group's commit does not move another's offset

    assert values_of(seen) == sent
    assert values_of(consume(archive, len(sent))) == sent


def test_poll_on_an_empty_topic_returns_nothing_within_the_timeout(bus: Bus) -> None:
    consumer = bus.consumer(bus.new_topic(), "idle")

    started = time.monotonic()
    records = consumer.poll(max_records=10, timeout_s=0.5)
    elapsed = time.monotonic() - started

    assert records == []
    assert elapsed < 2.5


def test_commit_of_nothing_is_a_no_op(bus: Bus) -> None:
    consumer = bus.consumer(bus.new_topic(), "idle")
    consumer.commit([])


def test_lag_is_what_remains_after_polling(bus: Bus) -> None:
    topic = bus.new_topic()
    produce(bus.producer(), topic, [b"%d" % i for i in range(10)])
    consumer = bus.consumer(topic, "lag")

    assert len(consume(consumer, 4)) == 4  # the broker holds 10; the client may prefetch more
    assert consumer.lag() == {(topic, 0): 6}

    produce(bus.producer(), topic, [b"10", b"11"])
    assert len(consume(consumer, 8)) == 8
    assert consumer.lag() == {(topic, 0): 0}


def test_lag_counts_every_assigned_partition(kafka_config: KafkaConfig,
                                            make_topic: Callable[..., str]) -> None:
    topic = make_topic(partitions=2)
    transport = KafkaTransport(kafka_config)
    producer = transport.producer()
    for i in range(20):
        producer.send(topic, value=b"%d" % i, key=b"cam-%d" % i)
    producer.close()
    consumer = transport.consumer([topic], group_id="lag")
    try:
        got = consume(consumer, 20)
        caught_up = consumer.lag()
    finally:
        consumer.close()
    again = transport.consumer([topic], group_id="lag-2")
    try:
        # Poll until both partitions have delivered: their lag then comes from the fetch
        # responses (Tansu answers ListOffsets with the last *batch* base + 1, not the end).
        some: list[Record] = []
        while {r.partition for r in some} != {0, 1} and len(some) < 20:
            some += consume(again, 1)
        lag = again.lag()
    finally:
        again.close()

    assert {r.partition for r in got} == {0, 1}
    assert caught_up == {(topic, 0): 0, (topic, 1): 0}
    assert 2 <= len(some) < 20
    assert set(lag) == {(topic, 0), (topic, 1)}
    assert sum(lag.values()) == 20 - len(some)


def _share_between_two_members(transport: KafkaTransport, topic: str) -> list[list[Record]]:
    producer = transport.producer()
    sent = {f"frame-{i}".encode() for i in range(40)}
    for i, value in enumerate(sorted(sent)):
        producer.send(topic, value=value, key=f"cam-{i}".encode())
    producer.close()
    group = f"pair-{uuid.uuid4().hex[:8]}"
    members = [transport.consumer([topic], group_id=group) for _ in range(2)]
    received: list[list[Record]] = [[], []]
    done = threading.Event()
    deadline = time.monotonic() + 90.0  # joins and rebalances take 3-14 s on Tansu

    def member_loop(member: Consumer, got: list[Record]) -> None:
        # Each member polls continuously from its own thread, as separate worker processes
        # do: a member that waits while the other polls stalls the group's rebalance.
        # No commits: after the rebalance each member re-reads its partition from the start.
        while not done.is_set() and time.monotonic() < deadline:
            got.extend(member.poll(max_records=100, timeout_s=POLL_S))
            if all(received) and {r.value for g in received for r in g} == sent:
                done.set()

    threads = [threading.Thread(target=member_loop, args=(m, g), daemon=True)
               for m, g in zip(members, received, strict=True)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=100.0)
    finally:
        done.set()
        for member in members:
            member.close()
    return received


def test_every_broadcast_consumer_reads_every_record_from_the_start(bus: Bus) -> None:
    topic = f"test-broadcast-{uuid.uuid4().hex}"
    assert bus.transport.ensure_topics([topic], partitions=1, compacted=True)
    produce(bus.producer(), topic, [b"a", b"b"], key=b"p")
    first, second = (bus.transport.broadcast_consumer([topic]) for _ in range(2))
    bus.clients += [first, second]

    got_first = consume(first, 2)
    first.commit(got_first)  # a broadcast reader commits nothing: it is in no shared group
    got_second = consume(second, 2)
    late = bus.transport.broadcast_consumer([topic])
    bus.clients.append(late)

    assert values_of(got_first) == values_of(got_second) == [b"a", b"b"]
    assert values_of(consume(late, 2)) == [b"a", b"b"]


@pytest.mark.kafka
def test_two_members_of_one_group_share_the_partitions(
    kafka_config: KafkaConfig, tmp_path: Path
) -> None:
    # Its own broker, so that the groups of earlier tests (some members killed -9) cannot
    # delay this group's rebalance.
    with running_tansu(tmp_path) as broker:
        transport = KafkaTransport(replace(kafka_config, bootstrap=broker.bootstrap))
        topic = f"test-{uuid.uuid4().hex}"
        transport.ensure_topics([topic], partitions=2)
        received = _share_between_two_members(transport, topic)
    sent = {f"frame-{i}".encode() for i in range(40)}
    assert all(received), "each member of the group should receive records"
    assert {r.value for got in received for r in got} == sent
    assert {r.partition for got in received for r in got} == {0, 1}


@pytest.mark.kafka
def test_producer_is_idempotent_acks_all_and_gzip(kafka_config: KafkaConfig) -> None:
    producer = KafkaTransport(kafka_config).producer()
    try:
        settings = producer.settings
        assert settings["enable_idempotence"] is True
        assert settings["acks"] == -1  # kafka-python's spelling of acks="all"
        assert settings["compression_type"] == "gzip"
        assert settings["key_serializer"] is None  # keys travel as the bytes given
        producer.send(f"test-{uuid.uuid4().hex}", value=b"x", key=b"k")
        producer.flush(timeout_s=10)  # the broker accepted an idempotent, gzipped batch
    finally:
        producer.close()


@pytest.mark.kafka
def test_ensure_topics_tolerates_existing_topics(
    kafka_config: KafkaConfig, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(partitions=2)
    KafkaTransport(kafka_config).ensure_topics([topic, f"test-{uuid.uuid4().hex}"], partitions=1)


@pytest.mark.kafka
def test_flush_raises_when_a_record_is_not_delivered(
    kafka_config: KafkaConfig, tmp_path: Path
) -> None:
    with running_tansu(tmp_path) as broker:
        config = replace(
            kafka_config,
            bootstrap=broker.bootstrap,
            request_timeout_ms=1000,
            delivery_timeout_ms=2000,
            bootstrap_timeout_ms=2000,
        )
        producer = KafkaTransport(config).producer()
        try:
            producer.send("frames", value=b"before")
            producer.flush(timeout_s=10)
            broker.kill()  # metadata is cached, so the next send queues without blocking
            producer.send("frames", value=b"lost")

            with pytest.raises(TransportError, match="1 of 1 records were not delivered"):
                producer.flush(timeout_s=10)
        finally:
            producer.close()


def test_unreachable_broker_is_a_transport_error() -> None:
    config = KafkaConfig(bootstrap="127.0.0.1:1", bootstrap_timeout_ms=500)
    transport = KafkaTransport(config)  # nothing connects before a client is asked for

    with pytest.raises(TransportError, match="bootstrap"):
        transport.producer()
    with pytest.raises(TransportError, match="bootstrap"):
        transport.consumer(["frames"], group_id="g")
    with pytest.raises(TransportError, match="bootstrap"):
        transport.ensure_topics(["frames"])
