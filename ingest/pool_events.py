"""Pool-change events: "product P's reference pool changed", broadcast to every worker.

One message per change on the pool topic (``agpt.pool``), keyed by product so that a
compacted topic keeps the latest event of each product. The value is JSON::

    {"product": "textile", "action": "changed", "pool_version": 42,
     "at": "2026-01-01T00:00:00+00:00"}

``pool_version`` increases with every change of the product's pool (see
:func:`inference.pool.pool_version`); a worker whose references are at least that recent
ignores the event. Unlike frames, every worker must read every event, so on Kafka the
reader is group-less (:class:`KafkaBroadcastReader`: all partitions assigned, read from the
beginning) rather than a member of the workers' group.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from ingest.transport.base import Producer, Record, TransportError

if TYPE_CHECKING:
    from ingest.transport.kafka import KafkaConfig

log = logging.getLogger(__name__)

POOL_ACTIONS = frozenset({"changed"})


class PoolEventError(ValueError):
    """A pool event that cannot be decoded; ``field_name`` names the offending field."""

    def __init__(self, message: str, *, field_name: str | None = None) -> None:
        super().__init__(message)
        self.field_name = field_name


@dataclass(frozen=True)
class PoolEvent:
    """The reference pool of one product changed.

    Attributes:
        product: Product whose pool changed; also the message key.
        pool_version: The pool's version after the change (monotonic per product).
        at: When the change was committed (timezone-aware).
        action: Always ``"changed"``: workers reload the whole pool of the product.
    """

    product: str
    pool_version: int
    at: datetime
    action: Literal["changed"] = "changed"

    def __post_init__(self) -> None:
        if not isinstance(self.product, str) or not self.product:
            msg = f"pool event field 'product' must be a non-empty string, got {self.product!r}"
            raise PoolEventError(msg, field_name="product")
        if self.action not in POOL_ACTIONS:
            msg = (f"pool event field 'action' must be one of {sorted(POOL_ACTIONS)}, "
                   f"got {self.action!r}")
            raise PoolEventError(msg, field_name="action")
        version = self.pool_version
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            msg = f"pool event field 'pool_version' must be an integer >= 0, got {version!r}"
            raise PoolEventError(msg, field_name="pool_version")
        if not isinstance(self.at, datetime) or self.at.tzinfo is None:
            msg = f"pool event field 'at' must be a timezone-aware datetime, got {self.at!r}"
            raise PoolEventError(msg, field_name="at")

    @property
    def key(self) -> bytes:
        """Message key: the product (compaction keeps the latest event per product)."""
        return self.product.encode()

    def encode(self) -> bytes:
        """Serialise to the JSON message value."""
        return json.dumps({
            "product": self.product,
            "action": self.action,
            "pool_version": self.pool_version,
            "at": self.at.isoformat(),
        }).encode()

    @classmethod
    def decode(cls, value: bytes) -> PoolEvent:
        """Parse a message value.

        Raises:
            PoolEventError: Not JSON, not an object, or a missing or invalid field (named).
        """
        try:
            data: Any = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            msg = f"pool event is not JSON: {exc}"
            raise PoolEventError(msg) from exc
        if not isinstance(data, dict):
            msg = f"pool event must be a JSON object, got {type(data).__name__}"
            raise PoolEventError(msg)
        for name in ("product", "action", "pool_version", "at"):
            if name not in data:
                msg = f"pool event field {name!r} is missing"
                raise PoolEventError(msg, field_name=name)
        at = data["at"]
        try:
            parsed_at = datetime.fromisoformat(at) if isinstance(at, str) else None
        except ValueError:
            parsed_at = None
        if parsed_at is None:
            msg = f"pool event field 'at' must be an ISO-8601 timestamp, got {at!r}"
            raise PoolEventError(msg, field_name="at")
        return cls(product=data["product"], action=data["action"],
                   pool_version=data["pool_version"], at=parsed_at)


def publish_pool_change(*, producer: Producer, topic: str, product: str,
                        version: int) -> PoolEvent:
    """Tell every worker that ``product``'s pool changed; blocks until acknowledged.

    Call it after the pool change is committed in the database: a worker reloading on the
    event must find the new pool.

    Args:
        producer: Transport producer.
        topic: The pool topic.
        product: Product whose pool changed.
        version: The pool's version after the change.

    Returns:
        The published event.

    Raises:
        TransportError: The broker did not acknowledge the event.
    """
    event = PoolEvent(product=product, pool_version=version, at=datetime.now(UTC))
    producer.send(topic, key=event.key, value=event.encode())
    producer.flush()
    return event


def ensure_pool_topic(config: KafkaConfig, topic: str) -> bool:
    """Create the pool topic (one partition, ``cleanup.policy=compact``) if it is missing.

    A broker that refuses the compaction setting gets a plain topic: events are small and
    rare, so an uncompacted topic only makes a new worker read some stale ones.

    Returns:
        False when the topic had to be created without compaction, else True (also when
        it existed already, whatever its settings).

    Raises:
        TransportError: The broker is unreachable or refused the topic.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    from ingest.transport.kafka import KafkaTransport

    admin: KafkaAdminClient | None = None
    try:
        admin = KafkaAdminClient(**config.client_settings())
        wanted = {topic: {"num_partitions": 1, "replication_factor": -1,
                          "configs": {"cleanup.policy": "compact"}}}
        result = admin.create_topics(wanted, raise_errors=False)["topics"][0]
        compacted = result["error_code"] in (0, TopicAlreadyExistsError.errno)
        if compacted:
            admin.wait_for_topics([topic], timeout_ms=config.request_timeout_ms)
    except KafkaError as exc:
        msg = f"cannot create the pool topic {topic!r}: {exc}"
        raise TransportError(msg) from exc
    finally:
        if admin is not None:
            admin.close()
    if not compacted:
        log.warning("broker refused a compacted pool topic %r (%s); creating it plain",
                    topic, result["error_message"])
        KafkaTransport(config).ensure_topics([topic], partitions=1)
    return compacted


class KafkaBroadcastReader:
    """Reads every partition of topics from the beginning, outside any consumer group.

    Implements the ``Consumer`` protocol for pool events: every worker sees every event,
    no group join delays the first read (a new group's join takes seconds, and
    ``poll(timeout 0)`` never completes one), and no per-process group is left behind on
    the broker. ``commit`` does nothing: a restarted worker reloads its pools anyway.
    """

    def __init__(self, config: KafkaConfig, topics: Sequence[str]) -> None:
        """Assign all partitions of ``topics`` (waiting up to the request timeout for them).

        Raises:
            TransportError: The client cannot be created or a topic does not exist.
        """
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        self._kafka_error = KafkaError
        try:
            self._consumer = KafkaConsumer(
                **config.client_settings(), group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
        except KafkaError as exc:
            msg = f"cannot create a Kafka reader for {list(topics)}: {exc}"
            raise TransportError(msg) from exc
        try:
            deadline = time.monotonic() + config.request_timeout_ms / 1000
            assigned = []
            for topic in topics:
                partitions = self._consumer.partitions_for_topic(topic)
                while not partitions and time.monotonic() < deadline:
                    time.sleep(0.1)
                    partitions = self._consumer.partitions_for_topic(topic)
                if not partitions:
                    msg = f"topic {topic!r} does not exist (create it with ensure_pool_topic)"
                    raise TransportError(msg)
                assigned += [TopicPartition(topic, p) for p in sorted(partitions)]
            self._consumer.assign(assigned)
            self._consumer.seek_to_beginning()
        except (TransportError, KafkaError) as exc:
            self._consumer.close()
            if isinstance(exc, TransportError):
                raise
            msg = f"cannot assign the partitions of {list(topics)}: {exc}"
            raise TransportError(msg) from exc

    def poll(self, *, max_records: int, timeout_s: float) -> list[Record]:
        """Return up to ``max_records`` records, waiting at most ``timeout_s`` (0: don't wait).

        Raises:
            TransportError: The fetch failed.
        """
        try:
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000),
                                          max_records=max_records)
        except self._kafka_error as exc:
            msg = f"poll of the broadcast reader failed: {exc}"
            raise TransportError(msg) from exc
        return [
            Record(topic=m.topic, partition=m.partition, offset=m.offset, key=m.key,
                   value=b"" if m.value is None else m.value,
                   headers=tuple((name, value or b"") for name, value in m.headers or ()),
                   timestamp_ms=m.timestamp)
            for messages in batches.values() for m in messages
        ]

    def commit(self, records: Sequence[Record]) -> None:
        """Nothing to commit: the reader has no group."""

    def lag(self) -> dict[tuple[str, int], int]:
        """Events not yet read, per partition (see ``ingest.transport.kafka.records_lag``)."""
        from ingest.transport.kafka import records_lag

        try:
            return records_lag(self._consumer)
        except self._kafka_error as exc:
            msg = f"cannot read the lag of the broadcast reader: {exc}"
            raise TransportError(msg) from exc

    def close(self) -> None:
        """Release the client."""
        try:
            self._consumer.close(autocommit=False)
        except self._kafka_error as exc:
            msg = f"cannot close the broadcast reader: {exc}"
            raise TransportError(msg) from exc
