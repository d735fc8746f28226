"""Prometheus metrics of an inference worker, registered on an injected registry.

Names and labels here are what ``deploy/prometheus/rules.yml`` and the Grafana dashboard
query (``tests/deploy/test_metric_names.py`` checks that every name they use is exported).
Labels are bounded sets only: ``product`` (a frame of an unknown product is dead-lettered
before any verdict), ``camera`` (capped per process by :class:`BoundedLabel`, because camera
ids arrive in untrusted messages), ``outcome``, ``reason``, ``stage``, ``condition``. Frame
ids never become label values.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from inference.health import Readiness

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Label value that stands for every value past a :class:`BoundedLabel`'s limit.
OVERFLOW_LABEL = "_other"


class BoundedLabel:
    """The first ``limit`` distinct values of a label pass; later ones become ``_other``.

    Camera ids come from Kafka messages; without a cap a hostile or misconfigured producer
    could create a time series per message and exhaust Prometheus. Thread-safe.

    Args:
        limit: Distinct values kept per process.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        """The label value to use for ``value``."""
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return OVERFLOW_LABEL


class ReadinessCollector(Collector):
    """Exports a :class:`~inference.health.Readiness` at scrape time.

    ``agpt_worker_ready`` is 1 while every condition holds; ``agpt_worker_ready_condition``
    has one series per condition (1 held, 0 not), so an alert can name the failing one.
    """

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the two readiness gauges (called by the registry on every scrape)."""
        conditions = self.readiness.conditions()
        ready = GaugeMetricFamily("agpt_worker_ready",
                                  "1 while every readiness condition holds (/readyz is 200).")
        ready.add_metric([], 1.0 if all(conditions.values()) else 0.0)
        yield ready
        per_condition = GaugeMetricFamily(
            "agpt_worker_ready_condition", "1 while the named readiness condition holds.",
            labels=["condition"])
        for name, ok in sorted(conditions.items()):
            per_condition.add_metric([name], 1.0 if ok else 0.0)
        yield per_condition


class WorkerMetrics:
    """Counters and histograms of one worker process (no per-frame label values).

    Args:
        registry: Where every metric is registered (built by the composition root).
        readiness: When given, exported as ``agpt_worker_ready`` gauges at scrape time.
        max_cameras: Distinct camera label values kept before ``_other``.
    """

    def __init__(self, registry: CollectorRegistry, *, readiness: Readiness | None = None,
                 max_cameras: int = 256) -> None:
        self._camera = BoundedLabel(max_cameras)
        self.frames_consumed = Counter(
            "agpt_frames_consumed_total", "Frame messages consumed.", registry=registry
        )
        self.verdicts = Counter(
            "agpt_verdicts_total", "Verdicts written, by outcome, product and camera.",
            ["outcome", "product", "camera"], registry=registry,
        )
        self.verdict_errors = Counter(
            "agpt_verdict_errors_total",
            "Frames of a batch whose verdict attempt failed, by stage (counted per attempt: "
            "a batch retried three times counts three times).",
            ["stage"], registry=registry,
        )
        self.dead_letters = Counter(
            "agpt_dlq_messages_total", "Messages sent to the dead-letter topic, by reason.",
            ["reason"], registry=registry,
        )
        self.inference_seconds = Histogram(
            "agpt_inference_duration_seconds", "Model time per batch.",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.db_write_seconds = Histogram(
            "agpt_db_write_duration_seconds", "Database transaction time per batch.",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.batch_size = Histogram(
            "agpt_batch_size", "Frames per inference batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64), registry=registry,
        )
        self.capture_to_verdict_seconds = Histogram(
            "agpt_capture_to_verdict_seconds", "Capture time to durable verdict.",
            buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.db_write_failures = Counter(
            "agpt_db_write_failures_total",
            "Failed database transactions (the batch is retried, nothing committed): "
            "connection-level and deployment faults.",
            registry=registry,
        )
        self.blob_store_failures = Counter(
            "agpt_blob_store_failures_total",
            "Batches that could not read or keep an image because the blob store was "
            "unreachable (the batch is retried, nothing committed).",
            registry=registry,
        )
        self.db_rejections = Counter(
            "agpt_db_rejections_total",
            "Frames whose row the database refused for its values (dead-lettered, the rest "
            "of the batch stored), by SQLSTATE or, without one, the driver's error class.",
            ["code"], registry=registry,
        )
        self.consumer_lag = Gauge(
            "agpt_consumer_lag_messages",
            "Frame messages on the worker's assigned partitions not yet polled (log end "
            "minus position, summed over partitions); updated after every poll.",
            registry=registry,
        )
        self.idle_backlog = Gauge(
            "agpt_idle_backlog_messages",
            "Records the consumer group has not committed on the frames topic while this "
            "worker holds no partition (0 while it holds any); above 0 for long: a rebalance "
            "that does not settle, or more workers than partitions.",
            registry=registry,
        )
        self.commit_failures = Counter(
            "agpt_offset_commit_failures_total",
            "Offset commits refused after a durable batch (e.g. a rebalance); the records "
            "are redelivered and dropped as duplicates.",
            registry=registry,
        )
        self.pool_reload_failures = Counter(
            "agpt_pool_reload_failures_total",
            "Pool reloads that failed, by reason (database: retried before the next batch; "
            "unreadable_image: old references kept; events: the pool topic could not be read).",
            ["reason"], registry=registry,
        )
        if readiness is not None:
            registry.register(ReadinessCollector(readiness))

    def record_verdict(self, *, product: str, camera: str, anomalous: bool) -> None:
        """Count one durable verdict (camera ids past the cap count as ``_other``)."""
        outcome = "anomalous" if anomalous else "normal"
        self.verdicts.labels(outcome, product, self._camera(camera)).inc()
