"""In-process transport: the embedded default (one process, no broker).

One partition per topic; committed offsets per consumer group, so a consumer that
reconnects without committing sees its records again, as with Kafka.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence

from ingest.transport.base import Headers, Record, next_offsets


class InProcessBroker:
    """Topics as append-only lists, shared by the producers and consumers made from it."""

    def __init__(self) -> None:
        self._logs: dict[str, list[Record]] = defaultdict(list)
        self._committed: dict[tuple[str, str], int] = {}
        self._changed = threading.Condition()

    def append(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> None:
        """Append one record to ``topic`` and wake waiting consumers."""
        with self._changed:
            log = self._logs[topic]
            log.append(
                Record(
                    topic=topic,
                    partition=0,
                    offset=len(log),
                    key=key,
                    value=value,
                    headers=tuple(headers),
                    timestamp_ms=int(time.time() * 1000),
                )
            )
            self._changed.notify_all()

    def read(self, topic: str, start: int, limit: int) -> list[Record]:
        """Up to ``limit`` records of ``topic`` from offset ``start``."""
        with self._changed:
            return self._logs[topic][start : start + limit]

    def end_offset(self, topic: str) -> int:
        """The offset the next record of ``topic`` gets."""
        with self._changed:
            return len(self._logs[topic])

    def committed(self, group_id: str, topic: str) -> int:
        """The committed offset of ``group_id`` on ``topic`` (0 when none)."""
        with self._changed:
            return self._committed.get((group_id, topic), 0)

    def commit(self, group_id: str, topic: str, offset: int) -> None:
        """Commit ``offset`` for ``group_id`` on ``topic`` (never moves back)."""
        with self._changed:
            key = (group_id, topic)
            self._committed[key] = max(self._committed.get(key, 0), offset)

    def wait_for_data(self, timeout_s: float) -> None:
        """Block until a record is appended or ``timeout_s`` passes."""
        with self._changed:
            self._changed.wait(timeout_s)

    def producer(self) -> InProcessProducer:
        """A producer appending to this broker."""
        return InProcessProducer(self)

    def consumer(self, topics: Sequence[str], *, group_id: str) -> InProcessConsumer:
        """A member of ``group_id`` reading ``topics`` from its committed offsets."""
        return InProcessConsumer(self, topics, group_id=group_id)

    def broadcast_consumer(self, topics: Sequence[str]) -> InProcessConsumer:
        """A consumer in a group of its own: it reads every record from the beginning."""
        return InProcessConsumer(self, topics, group_id=f"broadcast-{uuid.uuid4().hex}")

    def ensure_topics(self, topics: Sequence[str], *, partitions: int = 1,
                      compacted: bool = False) -> bool:
        """Topics exist on first use (one partition, never compacted); nothing to create."""
        return True


class InProcessProducer:
    """Producer appending synchronously to an :class:`InProcessBroker`."""

    def __init__(self, broker: InProcessBroker) -> None:
        self._broker = broker

    def send(
        self, topic: str, *, value: bytes, key: bytes | None = None, headers: Headers = ()
    ) -> None:
        """Append the record at once (nothing is buffered)."""
        self._broker.append(topic, key, value, headers)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Nothing is buffered in process."""

    def close(self) -> None:
        """Nothing to release."""


class InProcessConsumer:
    """The only member of its group (one partition per topic)."""

    def __init__(self, broker: InProcessBroker, topics: Sequence[str], *, group_id: str) -> None:
        self._broker = broker
        self._topics = list(topics)
        self._group_id = group_id
        self._position = {t: broker.committed(group_id, t) for t in self._topics}

    def idle_backlog(self) -> int:
        """Always 0: the in-process consumer reads every record of its topics."""
        return 0

    def poll(self, *, max_records: int, timeout_s: float) -> list[Record]:
        """Up to ``max_records`` records, waiting at most ``timeout_s`` for the first."""
        deadline = time.monotonic() + timeout_s
        while True:
            records: list[Record] = []
            for topic in self._topics:
                room = max_records - len(records)
                if room <= 0:
                    break
                batch = self._broker.read(topic, self._position[topic], room)
                if batch:
                    self._position[topic] = batch[-1].offset + 1
                    records.extend(batch)
            remaining = deadline - time.monotonic()
            if records or remaining <= 0:
                return records
            self._broker.wait_for_data(min(remaining, 0.05))

    def commit(self, records: Sequence[Record]) -> None:
        """Commit the offsets after ``records`` for this member's group."""
        for (topic, _partition), offset in next_offsets(records).items():
            self._broker.commit(self._group_id, topic, offset)

    def lag(self) -> dict[tuple[str, int], int]:
        """End of each topic's log minus this member's position (one partition per topic)."""
        return {(topic, 0): self._broker.end_offset(topic) - position
                for topic, position in self._position.items()}

    def close(self) -> None:
        """Uncommitted records are redelivered to the next member of the group."""
