"""Prometheus metrics of an inference worker, registered on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WorkerMetrics:
    """Counters and histograms of one worker process (no per-frame label values)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.frames_consumed = Counter(
            "agpt_frames_consumed_total", "Frame messages consumed.", registry=registry
        )
        self.verdicts = Counter(
            "agpt_verdicts_total", "Verdicts written, by outcome.", ["outcome"],
            registry=registry,
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
            "Failed database transactions (the batch is retried, nothing committed).",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "agpt_consumer_lag_messages",
            "Frame messages on the worker's assigned partitions not yet polled (log end "
            "minus position, summed over partitions); updated after every poll.",
            registry=registry,
        )
        self.commit_failures = Counter(
            "agpt_offset_commit_failures_total",
            "Offset commits refused after a durable batch (e.g. a rebalance); the records "
            "are redelivered and dropped as duplicates.",
            registry=registry,
        )
