"""The inference worker: consume → decode → batch → detect → persist → publish → commit.

At-least-once with idempotent writes: offsets are committed only after the verdict rows are
committed in the database and the verdict / dead-letter messages are acknowledged, so a crash
at any point re-delivers the batch and the (camera_id, frame_id) key drops the duplicates.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PIL import Image
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from inference.batch_store import DatabaseRejectedError, store_batch
from inference.batch_writer import BatchWriter
from inference.batching import BatchSizer
from inference.health import Liveness, Readiness
from inference.images import ImageLimits, decode_image, frame_image_bytes
from inference.metrics import WorkerMetrics
from inference.model.interface import Detection, Detector
from inference.pool import load_product
from ingest.blobstore import BlobStore, BlobUnavailableError
from ingest.envelope import FrameEnvelope, FrameError, decode, sha256_hex
from ingest.topics import DLQ_TOPIC, FRAMES_TOPIC, MESSAGE_VALUE_LIMIT, VERDICTS_TOPIC
from ingest.transport.base import Consumer, Producer, Record, TransportError
from storage.repositories import VerdictRecord
from storage.write_errors import classify_write_error

if TYPE_CHECKING:
    from inference.pool_updates import PoolUpdates

log = logging.getLogger(__name__)
_MAX_ERROR_CHARS = 600
_T = TypeVar("_T")


@dataclass(frozen=True)
class WorkerConfig:
    """Topics, batching and storage policy of a worker."""

    frames_topic: str = FRAMES_TOPIC
    verdicts_topic: str = VERDICTS_TOPIC
    dlq_topic: str = DLQ_TOPIC
    worker_id: str = "worker-0"
    batch_size: int = 8  # the largest batch
    batch_wait_ms: int = 50
    # Capture→verdict target: each batch is sized from what is waiting and the measured
    # per-batch cost (inference.batching); None = every batch takes what one poll returns.
    latency_slo_ms: float | None = None
    limits: ImageLimits = field(default_factory=ImageLimits)
    store_images: str = "flagged"  # "all" | "flagged" | "none"
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    # How often the worker asks whether it holds no partition while the group has a backlog,
    # and how long that may last (a rebalance) before readiness fails.
    assignment_check_s: float = 5.0
    idle_backlog_grace_s: float = 30.0
    # A dead letter carries at most this much of the original message, so that it still fits
    # the broker's limit (1 MiB by default) with its headers; the whole message stays at its
    # original topic/partition/offset, which the headers name.
    dlq_max_value_bytes: int = MESSAGE_VALUE_LIMIT
    # While the next batch is in hand, durable batches' offsets are committed together at
    # most this long after the oldest of them became durable (at once when idle or stopping):
    # a crash redelivers at most that much, and the idempotent writes drop the duplicates.
    commit_interval_ms: int = 1000
    # After the first batch (model, references and lazily imported code all loaded): collect
    # once and move every object alive then out of the collector's reach (``gc.freeze``).
    # Without it a full collection walks the model's and libraries' objects: measured
    # 250-425 ms, three times in one `agpt bench stream` run, each a latency stall.
    # Process-wide, so the composition root turns it on (`agpt worker`, the benches).
    freeze_heap: bool = False


@dataclass
class _Accepted:
    record: Record
    frame: FrameEnvelope
    image: Image.Image
    image_bytes: bytes


@dataclass(frozen=True)
class PreparedBatch:
    """A batch after the model: what its write stores and publishes."""

    records: Sequence[Record]
    accepted: list[_Accepted]
    detections: list[Detection]
    rejected: list[tuple[Record, FrameError]]
    rows: list[VerdictRecord]


@dataclass(frozen=True)
class BatchOutcome:
    """What one processed batch produced."""

    consumed: int
    verdicts: int
    inserted: int
    flagged: int
    dead_letters: int


def mask_png(mask: np.ndarray) -> bytes:
    """Encode a bool mask as a 1-bit PNG."""
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


def heatmap_png(anomaly_map: np.ndarray) -> tuple[bytes, float, float]:
    """Encode an anomaly map as an 8-bit greyscale PNG at its own resolution.

    Args:
        anomaly_map: float [H, W] map in the detector's units.

    Returns:
        ``(png, low, high)``: pixel value p stands for ``low + p / 255 * (high - low)``
        (a constant map is all zeros with ``low == high``).
    """
    values = np.nan_to_num(np.asarray(anomaly_map, dtype=np.float32))
    low, high = float(values.min()), float(values.max())
    span = high - low
    scaled = (values - low) / span * 255.0 if span > 0 else np.zeros_like(values)
    buffer = io.BytesIO()
    Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue(), low, high


def verdict_message(frame: FrameEnvelope, detection: Detection, model_id: str) -> bytes:
    """The JSON published on the verdicts topic for reject gates and MES consumers."""
    return json.dumps({
        "camera_id": frame.camera_id,
        "frame_id": frame.frame_id,
        "product": frame.product,
        "captured_at": frame.captured_at.isoformat(),
        "decided_at": datetime.now(UTC).isoformat(),
        "anomalous": detection.anomalous,
        "score": detection.score,
        "threshold": detection.threshold,
        "positions": detection.positions,
        "answer": detection.text,
        "model_id": model_id,
    }).encode()


def dead_letter_headers(record: Record, error: FrameError) -> list[tuple[str, bytes]]:
    """DLQ headers: why, which error, and where the original message lives.

    A refusal by the database also names its SQLSTATE and the driver's error class. Text is
    encoded so that nothing a message contains (a lone surrogate echoed in the error) can
    make the dead letter itself unsendable.
    """
    error_class = type(error).__name__
    extra: list[tuple[str, bytes]] = []
    if isinstance(error, DatabaseRejectedError):
        error_class = error.failure.error_class
        extra.append(("sqlstate", _header_text(error.failure.sqlstate or "")))
    return [
        ("reason", _header_text(error.reason)),
        ("error", _header_text(str(error)[:_MAX_ERROR_CHARS])),
        ("error_class", _header_text(error_class)),
        ("field", _header_text(error.field_name or "")),
        ("original_topic", _header_text(record.topic)),
        ("original_partition", str(record.partition).encode()),
        ("original_offset", str(record.offset).encode()),
        *extra,
    ]


def _header_text(text: str) -> bytes:
    return text.encode("utf-8", "backslashreplace")


def dead_letter(record: Record, error: FrameError, *,
                max_value_bytes: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The DLQ message of a rejected record: its bytes (cut to ``max_value_bytes``) and headers.

    A cut copy says so (``payload_truncated``) with the whole message's size and sha256, so the
    original (still at the named topic/partition/offset while retention lasts) can be matched.
    """
    headers = dead_letter_headers(record, error)
    value = record.value
    if len(value) <= max_value_bytes:
        return value, headers
    headers += [
        ("payload_truncated", b"true"),
        ("payload_bytes", str(len(value)).encode()),
        ("payload_sha256", hashlib.sha256(value).hexdigest().encode()),
    ]
    return value[:max_value_bytes], headers


def _timed(action: Callable[[], _T]) -> Callable[[], tuple[_T, float]]:
    """``action`` returning also its own seconds (of the attempt that succeeded)."""
    def timed() -> tuple[_T, float]:
        started = time.perf_counter()
        result = action()
        return result, time.perf_counter() - started

    return timed


class InferenceWorker:
    """One consumer-group member turning frame messages into durable verdicts.

    Readiness: the worker sets the ``consumer`` condition once a poll has returned,
    ``database`` to False while storage writes fail and ``blob_store`` to False while the blob
    store cannot be reached (each True again after a batch succeeds). Both outages pause the
    worker on the batch in hand: nothing is committed or dead-lettered until it is durable.

    Frame images the storage policy keeps go to ``blob_store`` (the database keeps the URI and
    SHA-256); without one they are kept inline in the database (embedded use).
    """

    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: Producer,
        session_factory: sessionmaker[Session],
        detector: Detector,
        config: WorkerConfig,
        metrics: WorkerMetrics,
        sleep: Callable[[float], None] | None = None,
        readiness: Readiness | None = None,
        pool_updates: PoolUpdates | None = None,
        blob_store: BlobStore | None = None,
        liveness: Liveness | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.producer = producer
        self.session_factory = session_factory
        self.detector = detector
        self.config = config
        self.metrics = metrics
        # None: back off on the stop event, so a stop request cuts a retry wait short.
        self._sleep = sleep
        self.readiness = readiness if readiness is not None else Readiness()
        # Pool changes announced by `agpt pool add/remove`, applied between batches.
        self.pool_updates = pool_updates
        self.blob_store = blob_store
        # Polled, not yet processed records (oldest first) when the sizer took fewer.
        self._pending: list[Record] = []
        self.sizer = (BatchSizer(slo_s=config.latency_slo_ms / 1000, max_batch=config.batch_size)
                      if config.latency_slo_ms else None)
        # Progress of the consume loop, for /healthz (a stuck batch fails liveness).
        self.liveness = liveness if liveness is not None else Liveness(bound_s=float("inf"))
        self._clock = clock
        self._next_assignment_check = 0.0
        self._idle_since: float | None = None
        self._heap_frozen = False
        # Records of durable batches whose offsets are not committed yet (run), oldest first.
        self._durable: list[Record] = []
        self._durable_since = 0.0

    # -- loop -----------------------------------------------------------------------------
    def run(self, stop: threading.Event, *,
            on_batch: Callable[[BatchOutcome], None] | None = None) -> None:
        """Process batches until ``stop`` is set; the batches in hand are finished first.

        Overlapped: while one thread writes batch N (database transaction, verdicts and
        dead letters acknowledged by the broker), this one polls, decodes and runs the model
        on batch N+1. Offsets are still committed here, in order, and only for batches whose
        write has returned (see :class:`BatchWriter` and :meth:`_finish`).

        Args:
            stop: Set to stop after the batches in hand.
            on_batch: Called with each batch's outcome once it is durable.
        """
        writer: BatchWriter[PreparedBatch, tuple[BatchOutcome, float]]
        with BatchWriter() as writer:
            while not stop.is_set():
                self._overlapped_step(stop, writer, on_batch)
            self._finish(writer, on_batch, busy=False)

    def _overlapped_step(self, stop: threading.Event,
                         writer: BatchWriter[PreparedBatch, tuple[BatchOutcome, float]],
                         on_batch: Callable[[BatchOutcome], None] | None) -> None:
        self._apply_pool_updates()  # the batch being written no longer needs the detector
        # The poll may wait while a batch is being written: its verdicts are published when
        # its write ends, only its commit waits for the poll.
        records = self._next_batch()
        self.liveness.tick()
        self._observe_assignment()
        if not records:
            self._finish(writer, on_batch, busy=False)
            return
        self.metrics.frames_consumed.inc(len(records))
        self.liveness.holding(True)
        prepared = self._until_durable(_timed(lambda: self._prepare(records)), len(records),
                                       stop, database=False)
        durable = self._finish(writer, on_batch, busy=True)  # the previous batch
        if prepared is None or not durable:
            # Stop during an outage: nothing after the batch that did not become durable may
            # be committed (its offsets would cover it); both are redelivered.
            return
        batch, prepare_s = prepared
        self.liveness.holding(True)

        def write() -> tuple[BatchOutcome, float] | None:
            written = self._until_durable(_timed(lambda: self._persist(batch)), len(records),
                                          stop)
            return None if written is None else (written[0], prepare_s + written[1])

        writer.submit(batch, write)

    def _finish(self, writer: BatchWriter[PreparedBatch, tuple[BatchOutcome, float]],
                on_batch: Callable[[BatchOutcome], None] | None, *, busy: bool) -> bool:
        """Wait for the batch being written; commit its offsets once it is durable.

        While ``busy`` (the next batch is in hand) the commit may wait, up to
        ``commit_interval_ms`` after the oldest durable batch not yet committed: a commit is
        a broker round trip (1-13 ms here, behind a held fetch on the same connection) on
        the model's thread. Idle or stopping, everything durable is committed at once.

        Returns:
            False when that batch did not become durable (its write gave up on ``stop``).
        """
        done = writer.result()
        self.liveness.holding(False)
        if done is not None:
            prepared, written = done
            if written is None:
                self._commit_durable()  # what became durable before it, not past it
                return False
            outcome, seconds = written  # preparation + write (the successful attempts)
            if self.sizer is not None:
                self.sizer.observe(len(prepared.records), seconds)
            if not self._durable:
                self._durable_since = time.monotonic()
            self._durable += prepared.records
            self._freeze_heap_once()
            if on_batch is not None:
                on_batch(outcome)
        if self._durable and (not busy or time.monotonic() - self._durable_since
                              >= self.config.commit_interval_ms / 1000):
            self._commit_durable()
        return True

    def _commit_durable(self) -> None:
        if self._durable:
            records, self._durable = self._durable, []
            self._commit(records)

    def step(self, stop: threading.Event | None = None) -> BatchOutcome | None:
        """Poll one batch and process it until it is durable (retrying storage failures).

        Not overlapped (:meth:`run` is): when it returns, the batch is durable and its
        offsets committed. Pending pool changes are applied first, so the batch uses the
        newest references.

        Returns:
            The outcome, or None when nothing arrived (or ``stop`` interrupted a retry,
            in which case nothing was committed and the batch will be redelivered).
        """
        self._apply_pool_updates()
        records = self._next_batch()
        self.liveness.tick()
        self._observe_assignment()
        if not records:
            return None
        self.metrics.frames_consumed.inc(len(records))
        self.liveness.holding(True)
        try:
            done = self._until_durable(_timed(lambda: self.process(records)), len(records),
                                       stop)
        finally:
            self.liveness.holding(False)
        if done is None:
            return None
        outcome, seconds = done
        if self.sizer is not None:
            self.sizer.observe(len(records), seconds)
        self._freeze_heap_once()
        return outcome

    def _apply_pool_updates(self) -> None:
        if self.pool_updates is not None:
            self.pool_updates.apply(detector=self.detector, session_factory=self.session_factory)

    def _freeze_heap_once(self) -> None:
        """After the first batch: collect, then keep the warm objects out of collections."""
        if not self.config.freeze_heap or self._heap_frozen:
            return
        self._heap_frozen = True
        gc.collect()
        gc.freeze()
        log.info("heap frozen after the first batch: %d objects", gc.get_freeze_count())

    def _until_durable(self, action: Callable[[], _T], size: int,
                       stop: threading.Event | None, *, database: bool = True) -> _T | None:
        """``action()``, retried with back-off through database and blob-store outages.

        Args:
            action: One attempt (the whole batch, its preparation or its write).
            size: Frames of the batch (the error metrics count frames).
            stop: Set to give up (None after a retry: nothing was committed).
            database: Whether a success proves the database reachable (the preparation
                only touches it for a product seen first, so it leaves the condition to the
                write, which may still be failing on another thread).
        """
        delay = self.config.retry_initial_s
        while True:
            try:
                result = action()
            except SQLAlchemyError as exc:
                # A connection-level or deployment fault (a refusal caused by one frame's
                # values is dead-lettered inside ``process``): the same records are retried,
                # nothing is committed until they are durable.
                self.metrics.db_write_failures.inc()
                self.metrics.verdict_errors.labels("database").inc(size)
                self.readiness.set("database", False)
                log.warning("database write failed, retrying in %.1fs: %s", delay, exc)
            except BlobUnavailableError as exc:
                # Same as a database outage: the frames are fine, the store is not.
                self.metrics.blob_store_failures.inc()
                self.readiness.set("blob_store", False)
                log.warning("blob store unavailable, retrying in %.1fs: %s", delay, exc)
            else:
                if database:
                    self.readiness.set("database", True)
                if self.blob_store is not None:
                    self.readiness.set("blob_store", True)
                return result
            if stop is not None and stop.is_set():
                return None
            self._back_off(delay, stop)
            self.liveness.tick()  # backing off during an outage is progress, not a stall
            delay = min(delay * 2, self.config.retry_max_s)

    def _next_batch(self) -> list[Record]:
        """Top up the pending records with one poll and take the next batch from them.

        Without an SLO the batch is what the poll returned. With one,
        the sizer decides from everything waiting (pending + not yet polled) and the oldest
        frame's age (the record timestamp, the producer's send time); what it leaves stays
        pending, in order, for the next step: offsets are committed per batch, so a crash
        redelivers it.
        """
        room = self.config.batch_size - len(self._pending)
        if room > 0:
            # Records in hand: only collect what is already there, don't wait for more.
            wait_s = 0.0 if self._pending else self.config.batch_wait_ms / 1000
            self._pending += self.consumer.poll(max_records=room, timeout_s=wait_s)
        self.readiness.set("consumer", True)
        lag = self._observe_lag()
        if not self._pending:
            return []
        take = len(self._pending)
        if self.sizer is not None:
            oldest_ms = self._pending[0].timestamp_ms
            age_s = max(0.0, time.time() - oldest_ms / 1000) if oldest_ms else 0.0
            take = self.sizer.choose(waiting=len(self._pending) + lag, oldest_age_s=age_s)
        batch, self._pending = self._pending[:take], self._pending[take:]
        return batch

    def _observe_assignment(self) -> None:
        """Every few seconds: does this member hold nothing while the group has a backlog?"""
        now = self._clock()
        if now < self._next_assignment_check:
            return
        self._next_assignment_check = now + self.config.assignment_check_s
        try:
            backlog = self.consumer.idle_backlog()
        except TransportError as exc:
            log.debug("group backlog unavailable: %s", exc)
            return
        self.metrics.idle_backlog.set(backlog)
        if backlog <= 0:
            self._idle_since = None
            self.readiness.set("partitions", True)
            return
        if self._idle_since is None:
            self._idle_since = now
        idle = now - self._idle_since
        if idle >= self.config.idle_backlog_grace_s:
            log.warning("this worker has held no partition for %.0f s while the group has %d "
                        "records waiting", idle, backlog)
            self.readiness.set("partitions", False)

    def _observe_lag(self) -> int:
        try:
            lag = self.consumer.lag()
        except TransportError as exc:
            # The gauge keeps its last value; the next poll surfaces a lasting broker fault.
            log.debug("consumer lag unavailable: %s", exc)
            return 0
        total = sum(lag.values())
        self.metrics.consumer_lag.set(total)
        return total

    def _back_off(self, delay: float, stop: threading.Event | None) -> None:
        if self._sleep is not None:
            self._sleep(delay)
        elif stop is not None:
            stop.wait(delay)
        else:
            time.sleep(delay)

    # -- one batch ------------------------------------------------------------------------
    def process(self, records: Sequence[Record]) -> BatchOutcome:
        """Decode, detect, persist, publish and commit one batch of records.

        A frame whose row the database refuses for its values (``store_batch``) is
        dead-lettered like a malformed message; the rest of the batch is stored and
        committed. A transient database failure propagates (``step`` retries the batch).
        """
        outcome = self._persist(self._prepare(records))
        self._commit(records)
        return outcome

    def _prepare(self, records: Sequence[Record]) -> PreparedBatch:
        """Decode and detect; the verdict rows (kept images put into the blob store)."""
        accepted, rejected = self._accept(records)
        started = time.perf_counter()
        accepted, detections = self._detect(accepted, rejected)
        inference_s = time.perf_counter() - started
        if accepted:
            self.metrics.inference_seconds.observe(inference_s)
            self.metrics.batch_size.observe(len(accepted))
        per_frame_ms = 1000 * inference_s / max(1, len(accepted))
        rows = [self._row(item, det, per_frame_ms) for item, det in zip(accepted, detections,
                                                                         strict=True)]
        return PreparedBatch(records, accepted, detections, rejected, rows)

    def _persist(self, batch: PreparedBatch) -> BatchOutcome:
        """Store the rows, then publish verdicts and dead letters (acknowledged).

        Safe on a thread of its own while the next batch is prepared: it touches the
        database and the producer only. A retry after a transient failure starts over
        (idempotent writes).
        """
        accepted, detections = batch.accepted, batch.detections
        rejected = list(batch.rejected)
        started = time.perf_counter()
        inserted, refused = store_batch(session_factory=self.session_factory, rows=batch.rows)
        self.metrics.db_write_seconds.observe(time.perf_counter() - started)
        if refused:
            for index, failure in refused.items():
                self.metrics.db_rejections.labels(failure.sqlstate or failure.error_class).inc()
                rejected.append((accepted[index].record, DatabaseRejectedError(failure)))
            kept = [i for i in range(len(accepted)) if i not in refused]
            accepted = [accepted[i] for i in kept]
            detections = [detections[i] for i in kept]
        self._publish(accepted, detections, rejected)
        now = datetime.now(UTC)
        flagged = 0
        for item, det in zip(accepted, detections, strict=True):
            flagged += det.anomalous
            self.metrics.record_verdict(product=item.frame.product,
                                        camera=item.frame.camera_id, anomalous=det.anomalous)
            lag = (now - item.frame.captured_at).total_seconds()
            self.metrics.capture_to_verdict_seconds.observe(max(0.0, lag))
        return BatchOutcome(len(batch.records), len(accepted), inserted, flagged, len(rejected))

    def _commit(self, records: Sequence[Record]) -> None:
        """Commit the offsets of a durable batch (on the polling thread: not thread-safe)."""
        try:
            self.consumer.commit(records)
        except TransportError as exc:
            # The batch is durable; whoever owns the partitions next re-reads it and the
            # (camera_id, frame_id) key drops the duplicates, so the worker carries on.
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed after a durable batch (redelivery follows): %s",
                        exc)

    def _accept(
        self, records: Sequence[Record]
    ) -> tuple[list[_Accepted], list[tuple[Record, FrameError]]]:
        accepted: list[_Accepted] = []
        rejected: list[tuple[Record, FrameError]] = []
        for record in records:
            try:
                accepted.append(self._decode(record))
            except FrameError as error:
                log.warning("dead-letter %s[%d]@%d: %s", record.topic, record.partition,
                            record.offset, error)
                rejected.append((record, error))
        return accepted, rejected

    def _decode(self, record: Record) -> _Accepted:
        limits = self.config.limits
        try:
            frame = decode(record.value, max_image_bytes=limits.max_bytes)
            data = frame_image_bytes(frame, limits, self.blob_store)
            image = decode_image(data, limits)
        except (FrameError, BlobUnavailableError):
            raise
        except Exception as exc:
            # A malformed message no check foresaw must not stop the worker (it would be
            # redelivered forever): it becomes a dead letter, logged with its traceback.
            log.exception("unexpected error decoding %s[%d]@%d", record.topic,
                          record.partition, record.offset)
            msg = f"frame cannot be decoded: {type(exc).__name__}: {exc}"
            raise FrameError(msg, reason="undecodable") from exc
        if not self._known_product(frame.product):
            msg = f"product {frame.product!r} has no normal references in the pool"
            raise FrameError(msg, reason="unknown_product", field_name="product")
        return _Accepted(record, frame, image, data)

    def _known_product(self, product: str) -> bool:
        """Whether ``product`` has references (loading them from the pool on first sight)."""
        if self.detector.product(product) is not None:
            return True
        try:
            return load_product(detector=self.detector, session_factory=self.session_factory,
                                product=product) is not None
        except Exception as exc:
            # psycopg raises a lone surrogate's UnicodeEncodeError unwrapped.
            failure = classify_write_error(exc)
            if not failure.permanent:
                raise  # an outage: ``step`` retries the batch
            self.metrics.db_rejections.labels(failure.sqlstate or failure.error_class).inc()
            raise DatabaseRejectedError(failure) from exc

    def _detect(self, accepted: list[_Accepted], rejected: list[tuple[Record, FrameError]]
                ) -> tuple[list[_Accepted], list[Detection]]:
        """Run the detector per product; a frame it fails on alone is dead-lettered."""
        by_product: dict[str, list[_Accepted]] = defaultdict(list)
        for item in accepted:
            by_product[item.frame.product].append(item)
        done: dict[int, Detection] = {}
        for product, items in by_product.items():
            try:
                results = self.detector.detect(product, [item.image for item in items])
                done.update((id(item), det) for item, det in zip(items, results, strict=True))
                continue
            except Exception:
                if len(items) == 1:
                    self._detector_failed(items[0], rejected)
                    continue
                log.exception("detector failed on a batch of %d %r frames; trying each alone",
                              len(items), product)
            for item in items:
                try:
                    done[id(item)] = self.detector.detect(product, [item.image])[0]
                except Exception:
                    self._detector_failed(item, rejected)
        kept = [item for item in accepted if id(item) in done]
        return kept, [done[id(item)] for item in kept]

    def _detector_failed(self, item: _Accepted, rejected: list[tuple[Record, FrameError]]
                         ) -> None:
        record = item.record
        self.metrics.verdict_errors.labels("model").inc()
        log.exception("detector failed on %s[%d]@%d", record.topic, record.partition,
                      record.offset)
        msg = "the detector failed on this frame (see the worker log at its offset)"
        rejected.append((record, FrameError(msg, reason="detector_error", field_name="image")))

    def _row(self, item: _Accepted, det: Detection, latency_ms: float) -> VerdictRecord:
        policy = self.config.store_images
        keep = policy == "all" or (policy == "flagged" and det.anomalous)
        frame = item.frame
        # The heatmap goes with the image: without one there is nothing to overlay it on.
        heatmap, low, high = (heatmap_png(det.anomaly_map) if keep or frame.image_uri
                              else (None, None, None))
        inline, uri, digest = self._kept_image(item, keep=keep)
        return VerdictRecord(
            camera_id=frame.camera_id, frame_id=frame.frame_id, product=frame.product,
            captured_at=frame.captured_at, image=inline, image_uri=uri, image_sha256=digest,
            metadata=frame.metadata, score=det.score,
            threshold=det.threshold, anomalous=det.anomalous, positions=det.positions,
            answer=det.text, mask_png=mask_png(det.mask) if det.mask.any() else None,
            model_id=self.detector.config.model_id, latency_ms=latency_ms,
            worker=self.config.worker_id, details=self.detector.evidence(frame.product, det),
            heatmap_png=heatmap, heatmap_min=low, heatmap_max=high,
        )

    def _kept_image(self, item: _Accepted, *, keep: bool
                    ) -> tuple[bytes | None, str | None, str | None]:
        """``(inline bytes, URI, sha256)`` the frame row keeps of the image.

        A claim-checked frame already lives in the store: its URI is kept as is. Otherwise a
        kept image is put into the blob store (content-addressed, so a retried batch writes
        the same object), or kept inline without a store.

        Raises:
            BlobUnavailableError: the store is down (the batch is retried).
        """
        frame = item.frame
        if frame.image_uri is not None:
            digest = frame.image_sha256 or sha256_hex(item.image_bytes)
            return None, frame.image_uri, digest
        if not keep:
            return None, None, None
        if self.blob_store is None:
            return item.image_bytes, None, None
        digest = sha256_hex(item.image_bytes)
        return None, self.blob_store.put(item.image_bytes, sha256=digest), digest

    def _publish(self, accepted: list[_Accepted], detections: list[Detection],
                 rejected: list[tuple[Record, FrameError]]) -> None:
        model_id = self.detector.config.model_id
        for item, det in zip(accepted, detections, strict=True):
            self.producer.send(self.config.verdicts_topic, key=item.frame.key,
                               value=verdict_message(item.frame, det, model_id))
        for record, error in rejected:
            value, headers = dead_letter(record, error,
                                         max_value_bytes=self.config.dlq_max_value_bytes)
            self.producer.send(self.config.dlq_topic, key=record.key, value=value,
                               headers=headers)
            self.metrics.dead_letters.labels(error.reason).inc()
        self.producer.flush()
