"""The transport interface between cameras, workers and downstream consumers.

Semantics follow Kafka so the in-process implementation and the Kafka one are
interchangeable: topics of keyed records, consumer groups, explicit offset commits
(at-least-once: a worker commits only after its writes are durable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

Headers = Sequence[tuple[str, bytes]]


class TransportError(RuntimeError):
    """The broker or client failed: not connected, not acknowledged, not committed."""


@dataclass(frozen=True)
class Record:
    """One consumed message and where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = field(default_factory=tuple)
    timestamp_ms: int | None = None


class Producer(Protocol):
    """Sends records; ``flush`` blocks until every sent record is acknowledged."""

    def send(
        self, topic: str, *, value: bytes, key: bytes | None = None, headers: Headers = ()
    ) -> None:
        """Queue one record for ``topic``."""
        ...

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until all queued records are acknowledged (raise on failure)."""
        ...

    def close(self) -> None:
        """Flush and release the client."""
        ...


class Consumer(Protocol):
    """A consumer-group member with manual commits."""

    def poll(self, *, max_records: int, timeout_s: float) -> list[Record]:
        """Return up to ``max_records`` records, waiting at most ``timeout_s``."""
        ...

    def commit(self, records: Sequence[Record]) -> None:
        """Commit the offsets after ``records`` (per partition, the highest + 1)."""
        ...

    def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet returned by ``poll``, per assigned (topic, partition).

        The end of each partition's log (as last seen by the client, no extra request)
        minus the member's position; partitions whose end is not known yet are left out.
        """
        ...

    def idle_backlog(self) -> int:
        """The group's uncommitted records while this member holds no partition.

        0 while it holds any; may ask the broker, so call it every few seconds.
        """
        ...

    def close(self) -> None:
        """Leave the group and release the client."""
        ...


class Transport(Protocol):
    """Factory of producers and consumers on one broker (or in-process bus)."""

    def producer(self) -> Producer:
        """Create a producer."""
        ...

    def consumer(self, topics: Sequence[str], *, group_id: str) -> Consumer:
        """Create a consumer-group member subscribed to ``topics``."""
        ...

    def broadcast_consumer(self, topics: Sequence[str]) -> Consumer:
        """Create a reader of every record of ``topics`` from the beginning, in no shared group.

        Every process that opens one sees every record (pool changes reach every worker);
        ``commit`` does nothing.
        """
        ...

    def ensure_topics(self, topics: Sequence[str], *, partitions: int = 1,
                      compacted: bool = False) -> bool:
        """Create the topics that do not exist yet.

        Args:
            topics: Topic names.
            partitions: Partitions of each created topic (existing ones are left as is).
            compacted: Ask for ``cleanup.policy=compact`` (the latest record per key is kept).

        Returns:
            False when compaction was asked for but the broker refused it (the topics were
            created plain), else True.
        """
        ...


def next_offsets(records: Sequence[Record]) -> dict[tuple[str, int], int]:
    """Map (topic, partition) to the offset to commit after ``records``."""
    offsets: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        offsets[key] = max(offsets.get(key, 0), record.offset + 1)
    return offsets
