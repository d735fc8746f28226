"""Kafka transport: the :mod:`ingest.transport.base` protocols on kafka-python 3.

Clients are created in :meth:`KafkaTransport.producer` / :meth:`KafkaTransport.consumer`
(never at import or construction) and released by the adapters' ``close``. Every
kafka-python error is re-raised as :class:`TransportError`, chained with ``from``. The only
home of Kafka code: nothing outside ``ingest/transport/`` imports ``kafka``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata, TopicPartition

from ingest.transport.base import Headers, Record, TransportError, next_offsets
from ingest.transport.kafka_security import KafkaSecurity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KafkaConfig:
    """Client settings shared by every producer, consumer and admin client.

    Attributes:
        bootstrap: Comma-separated ``host:port`` list of brokers.
        client_id: Client id reported to the broker (logs, quotas).
        session_timeout_ms: A member missing heartbeats this long is evicted.
        heartbeat_interval_ms: Heartbeat period of the background thread.
        max_poll_interval_ms: Longest gap between polls before the member is evicted;
            also the rebalance timeout the member announces.
        request_timeout_ms: Timeout of one broker request (> the fetch wait).
        max_block_ms: Longest ``send`` may block on metadata or a full buffer.
        delivery_timeout_ms: Longest a sent record may wait for its acknowledgement,
            retries included (>= ``request_timeout_ms``); then it fails at ``flush``.
        bootstrap_timeout_ms: Longest a client waits, when created, for a first broker.
        fetch_max_wait_ms: Longest the broker may hold a fetch that found no new record
            (group members; a broadcast reader keeps kafka-python's 500). Apache Kafka
            answers a held fetch as soon as a record arrives, so a short wait only costs idle
            fetch requests; Tansu answers later, and the wait shows in capture→verdict:
            paced through a busy worker, p50 175 ms at 100 against 149 at 20 and 146 at 5
            (same run, interleaved; kafka-python's 500 default: p50 131 ms of pure delivery
            latency). An idle member costs ~4 % of a core at 100, ~9 % at 20, ~24 % at 5
            (client) plus a third of that in Tansu: 20 takes most of the gain.
        compression: Producer batch compression (``gzip``, ``lz4``, ``zstd`` or ``none``).
        security: TLS / SASL settings of every client (plaintext by default).
        group_instance_id: Static membership (KIP-345) of consumers: a stable id unique in
            the group. A member that leaves and comes back under it within the session
            timeout gets its partitions back without a rebalance. None: dynamic members.
    """

    bootstrap: str
    client_id: str = "agpt"
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 1000
    max_poll_interval_ms: int = 300000
    request_timeout_ms: int = 30000
    max_block_ms: int = 30000
    delivery_timeout_ms: int = 120000
    bootstrap_timeout_ms: int = 30000
    fetch_max_wait_ms: int = 20
    compression: str = "gzip"
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    group_instance_id: str | None = None

    def client_settings(self) -> dict[str, Any]:
        """Keyword arguments common to every kafka-python client (security included)."""
        return {
            "bootstrap_servers": self.bootstrap.split(","),
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "bootstrap_timeout_ms": self.bootstrap_timeout_ms,
            **self.security.client_settings(),
        }


def to_records(batches: Mapping[TopicPartition, Iterable[Any]]) -> list[Record]:
    """Records of one ``KafkaConsumer.poll`` answer, partition by partition."""
    return [
        Record(
            topic=m.topic,
            partition=m.partition,
            offset=m.offset,
            key=m.key,
            # Kafka allows null values (tombstones) and null header values.
            value=b"" if m.value is None else m.value,
            headers=tuple((name, value or b"") for name, value in m.headers or ()),
            timestamp_ms=m.timestamp,
        )
        for messages in batches.values()
        for m in messages
    ]


def records_lag(consumer: KafkaConsumer) -> dict[tuple[str, int], int]:
    """Per assigned partition: the end of the log minus the consumer's position.

    The end is the high watermark of the partition's last parsed fetch response (the Java
    client's ``records-lag``: no request needed, so it is cheap after every poll); only for
    partitions without one yet (just assigned, or fetched but not drained) is it asked of
    the broker. Partitions whose position is still being resolved are left out.
    """
    ends: dict[TopicPartition, int] = {}
    unknown: list[TopicPartition] = []
    for partition in consumer.assignment():
        high = consumer.highwater(partition)
        if high is None:
            unknown.append(partition)
        else:
            ends[partition] = high
    if unknown:
        ends.update(consumer.end_offsets(unknown))
    lag: dict[tuple[str, int], int] = {}
    for partition, end in ends.items():
        position = consumer.position(partition, timeout_ms=0)
        if position is not None:
            lag[(partition.topic, partition.partition)] = max(0, end - position)
    return lag


class KafkaProducerAdapter:
    """Idempotent producer; ``flush`` raises if any record sent since the last flush failed."""

    def __init__(self, config: KafkaConfig) -> None:
        compression = None if config.compression == "none" else config.compression
        try:
            self._producer = KafkaProducer(
                **config.client_settings(),
                acks="all",
                enable_idempotence=True,
                compression_type=compression,
                max_block_ms=config.max_block_ms,
                delivery_timeout_ms=config.delivery_timeout_ms,
            )
        except KafkaError as exc:
            msg = f"cannot create a Kafka producer for {config.bootstrap}: {exc}"
            raise TransportError(msg) from exc
        # Futures of records sent since the last flush, checked there.
        self._pending: list[Any] = []
        self._closed = False

    @property
    def settings(self) -> Mapping[str, Any]:
        """The effective kafka-python producer configuration (read-only view)."""
        return MappingProxyType(dict(self._producer.config))

    def send(
        self, topic: str, *, value: bytes, key: bytes | None = None, headers: Headers = ()
    ) -> None:
        """Queue one record for ``topic`` (partitioned by ``key``).

        Raises:
            TransportError: The record could not be queued (metadata timeout, full buffer).
        """
        try:
            future = self._producer.send(topic, value=value, key=key, headers=list(headers))
        except KafkaError as exc:
            msg = f"cannot send to {topic!r}: {exc}"
            raise TransportError(msg) from exc
        self._pending.append(future)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every queued record is acknowledged by all in-sync replicas.

        Args:
            timeout_s: Longest wait in seconds.

        Raises:
            TransportError: The wait timed out or at least one record was not delivered.
        """
        pending, self._pending = self._pending, []
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            msg = f"flush of {len(pending)} records timed out after {timeout_s} s: {exc}"
            raise TransportError(msg) from exc
        failed = [f for f in pending if f.failed()]
        if failed:
            first = failed[0].exception
            msg = f"{len(failed)} of {len(pending)} records were not delivered: {first}"
            raise TransportError(msg) from first

    def close(self) -> None:
        """Flush (raising on undelivered records), then release the client; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            try:
                self._producer.close()
            except KafkaError as exc:
                msg = f"cannot close the Kafka producer: {exc}"
                raise TransportError(msg) from exc


class _KafkaReader:
    """What a group member and a broadcast reader share: poll, lag, close, error wording."""

    _consumer: KafkaConsumer
    _name: str  # in error messages: "group 'x'", "the broadcast reader"

    def poll(self, *, max_records: int, timeout_s: float) -> list[Record]:
        """Return up to ``max_records`` records, waiting at most ``timeout_s`` seconds.

        The first polls of a new group member also join the group (seconds); until the
        join completes they return ``[]``. A broadcast reader never waits for a join.

        Raises:
            TransportError: The fetch or the group membership failed.
        """
        try:
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            msg = f"poll failed in {self._name}: {exc}"
            raise TransportError(msg) from exc
        return to_records(batches)

    def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet polled per assigned partition (see :func:`records_lag`).

        Raises:
            TransportError: The client failed while reading its positions.
        """
        try:
            return records_lag(self._consumer)
        except KafkaError as exc:
            msg = f"cannot read the lag of {self._name}: {exc}"
            raise TransportError(msg) from exc

    def close(self) -> None:
        """Release the client without committing (a group member leaves its group).

        Uncommitted records of a group are redelivered to its other members.
        """
        try:
            self._consumer.close(autocommit=False)
        except KafkaError as exc:
            msg = f"cannot close the consumer of {self._name}: {exc}"
            raise TransportError(msg) from exc


class KafkaConsumerAdapter(_KafkaReader):
    """A consumer-group member with manual, synchronous commits."""

    def __init__(self, config: KafkaConfig, topics: Sequence[str], *, group_id: str) -> None:
        self._group_id = group_id
        self._name = f"group {group_id!r}"
        self._topics = list(topics)
        self._config = config
        # Clients of idle_backlog (created on first use, closed with the member).
        self._probe: KafkaConsumer | None = None
        self._admin: KafkaAdminClient | None = None
        try:
            self._consumer = KafkaConsumer(
                *topics,
                **config.client_settings(),
                group_id=group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=config.session_timeout_ms,
                heartbeat_interval_ms=config.heartbeat_interval_ms,
                max_poll_interval_ms=config.max_poll_interval_ms,
                fetch_max_wait_ms=config.fetch_max_wait_ms,
                group_instance_id=config.group_instance_id,
            )
        except KafkaError as exc:
            msg = f"cannot create a Kafka consumer for group {group_id!r}: {exc}"
            raise TransportError(msg) from exc

    def commit(self, records: Sequence[Record]) -> None:
        """Commit, synchronously, the offsets after ``records`` (per partition).

        Raises:
            TransportError: The commit failed, e.g. the partitions were reassigned.
        """
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in next_offsets(records).items()
        }
        if not offsets:
            return
        try:
            self._consumer.commit(offsets)
        except KafkaError as exc:
            msg = f"commit failed in group {self._group_id!r}: {exc}"
            raise TransportError(msg) from exc

    def idle_backlog(self) -> int:
        """Records the group has not committed on the topics, while this member holds none.

        0 while the member holds at least one partition. Otherwise the group's backlog
        (log end minus committed offset, or minus the log start where nothing is committed,
        summed over every partition of the subscribed topics): a member that holds nothing
        while this is above 0 is not doing the work it is there for (e.g. a rebalance that
        never ends). The offsets are read with clients of their own, created on first use:
        asking the member's own client while it joins the group keeps it from ever joining
        (kafka-python 3, seen on Tansu). Costs a few broker requests; call it every few
        seconds, not per poll.

        Raises:
            TransportError: The broker could not be asked.
        """
        if self._consumer.assignment():
            return 0
        try:
            if self._probe is None:
                self._probe = KafkaConsumer(**self._config.client_settings(), group_id=None,
                                            enable_auto_commit=False)
                self._admin = KafkaAdminClient(**self._config.client_settings())
            probe, admin = self._probe, self._admin
            assert admin is not None
            partitions = [TopicPartition(topic, number) for topic in self._topics
                          for number in sorted(probe.partitions_for_topic(topic) or ())]
            if not partitions:
                return 0
            ends = probe.end_offsets(partitions, timeout_ms=self._config.request_timeout_ms)
            starts = probe.beginning_offsets(partitions,
                                             timeout_ms=self._config.request_timeout_ms)
            committed = admin.list_group_offsets({self._group_id: partitions}).get(
                self._group_id, {})
        except KafkaError as exc:
            msg = f"cannot read the backlog of group {self._group_id!r}: {exc}"
            raise TransportError(msg) from exc
        backlog = 0
        for partition in partitions:
            mark = committed.get(partition)
            offset = mark.offset if mark is not None and mark.offset >= 0 else None
            base = offset if offset is not None else starts.get(partition, 0)
            backlog += max(0, ends.get(partition, 0) - base)
        return backlog

    def close(self) -> None:
        """Leave the group without committing; release the backlog probes too.

        Uncommitted records are redelivered to the group's other members.
        """
        for client in (self._probe, self._admin):
            if client is not None:
                try:
                    client.close()
                except KafkaError as exc:  # only the member's close matters
                    log.warning("cannot close a backlog probe of %r: %s", self._group_id, exc)
        super().close()


class KafkaTransport:
    """Factory of Kafka producers and consumers (implements ``Transport``)."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config

    def producer(self) -> KafkaProducerAdapter:
        """Create an idempotent, gzip-compressing producer (``acks="all"``)."""
        return KafkaProducerAdapter(self.config)

    def consumer(self, topics: Sequence[str], *, group_id: str) -> KafkaConsumerAdapter:
        """Create a member of ``group_id`` subscribed to ``topics`` (earliest, manual commit)."""
        return KafkaConsumerAdapter(self.config, topics, group_id=group_id)

    def broadcast_consumer(self, topics: Sequence[str]) -> KafkaBroadcastReader:
        """A group-less reader of every partition of ``topics`` from the beginning."""
        return KafkaBroadcastReader(self.config, topics)

    def ensure_topics(
        self,
        topics: Sequence[str],
        *,
        partitions: int = 1,
        replication_factor: int = -1,
        compacted: bool = False,
    ) -> bool:
        """Create the topics that do not exist yet and wait until they have leaders.

        A broker that refuses ``cleanup.policy=compact`` gets plain topics (logged): the
        compacted topics here carry small, rare events, so an uncompacted one only makes a
        new reader see some stale ones.

        Args:
            topics: Topic names.
            partitions: Partitions of each created topic (existing topics are left as is).
            replication_factor: Replicas per partition; ``-1`` is the broker default.
            compacted: Create them with ``cleanup.policy=compact``.

        Returns:
            False when compaction was refused and the topics were created plain, else True
            (also when they existed already, whatever their settings).

        Raises:
            TransportError: The broker is unreachable or refused a topic.
        """
        if not topics:
            return True
        if compacted:
            refused = self._create_topics(topics, partitions, replication_factor,
                                          {"cleanup.policy": "compact"}, raise_refusal=False)
            if not refused:
                return True
            log.warning("broker refused compacted topics %s (%s); creating them plain",
                        list(topics), refused)
        self._create_topics(topics, partitions, replication_factor, {}, raise_refusal=True)
        return not compacted

    def _create_topics(self, topics: Sequence[str], partitions: int, replication_factor: int,
                       configs: dict[str, str], *, raise_refusal: bool) -> str | None:
        """Create missing topics; the broker's refusal message (or raise), None when done."""
        wanted: dict[str, dict[str, Any]] = {
            t: {"num_partitions": partitions, "replication_factor": replication_factor}
            for t in topics
        }
        if configs:
            for spec in wanted.values():
                spec["configs"] = configs
        admin: KafkaAdminClient | None = None
        try:
            admin = KafkaAdminClient(**self.config.client_settings())
            response = admin.create_topics(wanted, raise_errors=False)
            for result in response["topics"]:
                if result["error_code"] not in (0, TopicAlreadyExistsError.errno):
                    if not raise_refusal:
                        return str(result["error_message"])
                    msg = f"cannot create topic {result['name']!r}: {result['error_message']}"
                    raise TransportError(msg)
            # Creation is acknowledged before every partition has a leader.
            admin.wait_for_topics(list(topics), timeout_ms=self.config.request_timeout_ms)
        except KafkaError as exc:
            msg = f"cannot create topics {list(topics)}: {exc}"
            raise TransportError(msg) from exc
        finally:
            if admin is not None:
                admin.close()
        return None


class KafkaBroadcastReader(_KafkaReader):
    """Reads every partition of topics from the beginning, outside any consumer group.

    Implements the ``Consumer`` protocol for broadcasts (pool events): every process sees
    every record, no group join delays the first read (a new group's join takes seconds,
    and ``poll(timeout 0)`` never completes one), and no per-process group is left behind
    on the broker. ``commit`` does nothing: a restarted worker reloads its pools anyway.
    """

    def __init__(self, config: KafkaConfig, topics: Sequence[str]) -> None:
        """Assign all partitions of ``topics`` (waiting up to the request timeout for them).

        Raises:
            TransportError: The client cannot be created or a topic does not exist.
        """
        self._name = "the broadcast reader"
        try:
            self._consumer = KafkaConsumer(
                **config.client_settings(), group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
        except KafkaError as exc:
            msg = f"cannot create a Kafka reader for {list(topics)}: {exc}"
            raise TransportError(msg) from exc
        try:
            self._consumer.assign(self._partitions(topics, config.request_timeout_ms))
            self._consumer.seek_to_beginning()
        except (TransportError, KafkaError) as exc:
            self._consumer.close()
            if isinstance(exc, TransportError):
                raise
            msg = f"cannot assign the partitions of {list(topics)}: {exc}"
            raise TransportError(msg) from exc

    def _partitions(self, topics: Sequence[str], timeout_ms: int) -> list[TopicPartition]:
        deadline = time.monotonic() + timeout_ms / 1000
        assigned = []
        for topic in topics:
            partitions = self._consumer.partitions_for_topic(topic)
            while not partitions and time.monotonic() < deadline:
                time.sleep(0.1)
                partitions = self._consumer.partitions_for_topic(topic)
            if not partitions:
                msg = f"topic {topic!r} does not exist (create it with ensure_topics)"
                raise TransportError(msg)
            assigned += [TopicPartition(topic, p) for p in sorted(partitions)]
        return assigned

    def idle_backlog(self) -> int:
        """Always 0: a broadcast reader holds every partition of its topics."""
        return 0

    def commit(self, records: Sequence[Record]) -> None:
        """Nothing to commit: the reader has no group."""
