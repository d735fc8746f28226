"""Live pool refresh: every worker reloads a product whose pool changed, between batches.

The pool commands (``agpt pool add/remove``, :func:`inference.pool.add_references`) commit
the change, then publish a :class:`~ingest.pool_events.PoolEvent`. Each worker reads every
event (its own reader, never the shared frames group) and, before polling its next batch,
reloads the changed products it serves, so the next frames of that product are judged
against the new references and the threshold calibrated on them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from inference.model.interface import Detector, ReferenceState
from inference.pool import load_product
from ingest.pool_events import PoolEvent, PoolEventError
from ingest.transport.base import Consumer, Transport, TransportError

if TYPE_CHECKING:
    from inference.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class PoolUpdates:
    """Pending pool changes read, without waiting, from a pool-event consumer.

    Attributes:
        rejected: Events that could not be decoded (logged and skipped).
        failed: Reloads that failed on unreadable pool images (old references kept).
    """

    def __init__(self, consumer: Consumer, *, max_records: int = 500,
                 poll_timeout_s: float = 0.0, metrics: WorkerMetrics | None = None) -> None:
        """Read events from ``consumer`` (which should see every event from the start).

        Args:
            consumer: Subscribed to the pool topic only.
            max_records: Events read per poll.
            poll_timeout_s: Wait per poll; 0 never delays a batch.
            metrics: Where failed reloads are counted (``agpt_pool_reload_failures_total``).
        """
        self.metrics = metrics
        self.consumer = consumer
        self.max_records = max_records
        self.poll_timeout_s = poll_timeout_s
        self.rejected = 0
        self.failed = 0
        self._pending: dict[str, int] = {}

    def changed(self) -> dict[str, int]:
        """Products whose pool changed since the last call, with their newest version.

        Reads what has arrived without waiting (``poll_timeout_s``); events for the same
        product collapse into the highest version. Includes changes a failed
        :meth:`apply` left pending.

        Raises:
            TransportError: The consumer failed (pending changes are kept).
        """
        for _ in range(100):  # bounded: a flood of events cannot starve the frames
            records = self.consumer.poll(max_records=self.max_records,
                                         timeout_s=self.poll_timeout_s)
            for record in records:
                try:
                    event = PoolEvent.decode(record.value)
                except PoolEventError as exc:
                    self.rejected += 1
                    log.warning("skipping pool event %s[%d]@%d: %s", record.topic,
                                record.partition, record.offset, exc)
                    continue
                known = self._pending.get(event.product, -1)
                self._pending[event.product] = max(known, event.pool_version)
            if len(records) < self.max_records:
                break
        changed, self._pending = self._pending, {}
        return changed

    def apply(self, *, detector: Detector,
              session_factory: sessionmaker[Session]) -> list[ReferenceState]:
        """Reload every changed product the detector serves whose references are older.

        Products the detector has not loaded yet are left alone (they load from the
        database on their first frame). A database failure keeps the remaining changes
        pending for the next call; the worker carries on with the current references.

        Returns:
            The memories that were reloaded.
        """
        try:
            changed = self.changed()
        except TransportError as exc:
            self._count_failure("events")
            log.warning("cannot read pool events (keeping the current references): %s", exc)
            return []
        reloaded: list[ReferenceState] = []
        for product, version in sorted(changed.items()):
            current = detector.product(product)
            if current is None or current.version >= version:
                continue
            try:
                memory = load_product(detector=detector, session_factory=session_factory,
                                      product=product)
            except SQLAlchemyError as exc:
                self._requeue(changed, after=product)
                self._count_failure("database")
                log.warning("pool reload of %s failed, retrying before the next batch: %s",
                            product, exc)
                break
            except (OSError, ValueError) as exc:  # an unreadable image in the pool
                self.failed += 1
                self._count_failure("unreadable_image")
                log.error("pool reload of %s failed, keeping %d references (version %d): %s",
                          product, current.references, current.version, exc)
                continue
            if memory is None:
                log.warning("pool of %s is empty now; keeping its %d previous references",
                            product, current.references)
                continue
            log.info("pool reloaded: product=%s references=%d threshold=%.4f version=%d",
                     product, memory.references, memory.calibration.threshold, memory.version)
            reloaded.append(memory)
        return reloaded

    def _count_failure(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.pool_reload_failures.labels(reason).inc()

    def _requeue(self, changed: dict[str, int], *, after: str) -> None:
        for product, version in changed.items():
            if product >= after:
                self._pending[product] = max(self._pending.get(product, -1), version)

    def close(self) -> None:
        """Release the consumer."""
        self.consumer.close()


def open_pool_updates(transport: Transport, *, topic: str,
                      metrics: WorkerMetrics | None = None) -> PoolUpdates:
    """Pool updates for one worker process on ``transport``.

    The (compacted) pool topic is created if missing and read by the transport's broadcast
    consumer, so this worker sees every event from the start, whatever the other workers do.

    Raises:
        TransportError: The broker is unreachable or the topic cannot be created.
    """
    transport.ensure_topics([topic], partitions=1, compacted=True)
    return PoolUpdates(transport.broadcast_consumer([topic]), metrics=metrics)
