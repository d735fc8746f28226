"""Read the workers' Prometheus metrics for the Overview: consumer lag and dead letters.

Lag and dead letters live in the workers (``/metrics`` of ``agpt worker --metrics-port``),
not in the database. The dashboard scrapes the URLs in ``AGPT_WORKER_METRICS_URLS``
(comma-separated) when the Overview is open, and keeps the recent samples in memory so the
lag can be drawn over time. A worker that does not answer is reported, not fatal.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

WORKER_METRICS_ENV = "AGPT_WORKER_METRICS_URLS"
LAG_METRIC = "agpt_consumer_lag_messages"
DLQ_METRIC = "agpt_dlq_messages"  # counter family name (samples end in _total)
CONSUMED_METRIC = "agpt_frames_consumed"
MAX_BODY_BYTES = 5 * 1024 * 1024


@dataclass(frozen=True)
class WorkerSample:
    """One scrape of one worker.

    Attributes:
        url: The ``/metrics`` URL scraped.
        at: Unix time of the scrape.
        lag: Consumer lag in messages (None if the worker does not report it).
        dead_letters: Dead letters sent so far, by reason.
        consumed: Frame messages consumed so far.
        error: Why the scrape failed (then the other fields are empty).
    """

    url: str
    at: float
    lag: float | None = None
    dead_letters: dict[str, float] = field(default_factory=dict)
    consumed: float | None = None
    error: str | None = None


def metrics_urls() -> list[str]:
    """The worker ``/metrics`` URLs from ``AGPT_WORKER_METRICS_URLS``."""
    raw = os.environ.get(WORKER_METRICS_ENV, "")
    return [part.strip() for part in raw.split(",") if part.strip()]


def parse(text: str, *, url: str, at: float) -> WorkerSample:
    """Pick lag, dead letters by reason and frames consumed out of a Prometheus exposition."""
    lag: float | None = None
    consumed: float | None = None
    dead: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == LAG_METRIC:
                lag = (lag or 0.0) + sample.value
            elif sample.name == f"{DLQ_METRIC}_total":
                reason = sample.labels.get("reason", "unknown")
                dead[reason] = dead.get(reason, 0.0) + sample.value
            elif sample.name == f"{CONSUMED_METRIC}_total":
                consumed = sample.value
    return WorkerSample(url=url, at=at, lag=lag, dead_letters=dead, consumed=consumed)


def scrape(url: str, timeout_s: float = 2.0) -> WorkerSample:
    """Scrape one worker; a failure comes back as a sample with ``error`` set."""
    now = time.time()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            body = reply.read(MAX_BODY_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return WorkerSample(url=url, at=now, error=str(getattr(exc, "reason", exc)))
    if len(body) > MAX_BODY_BYTES:
        return WorkerSample(url=url, at=now, error="metrics page too large")
    try:
        return parse(body.decode("utf-8", "replace"), url=url, at=now)
    except ValueError as exc:
        return WorkerSample(url=url, at=now, error=f"not a Prometheus exposition ({exc})")


class SampleHistory:
    """Recent samples per worker URL, shared by every session of the server (thread-safe).

    Args:
        keep: Samples kept per worker.
        min_interval_s: A new scrape is taken only when the last one is older than this.
    """

    def __init__(self, keep: int = 720, min_interval_s: float = 5.0) -> None:
        """Start empty."""
        self.keep = keep
        self.min_interval_s = min_interval_s
        self._samples: dict[str, deque[WorkerSample]] = {}
        self._lock = threading.Lock()

    def refresh(self, urls: list[str]) -> dict[str, list[WorkerSample]]:
        """Scrape the workers whose last sample is stale; return every worker's samples."""
        now = time.time()
        for url in urls:
            with self._lock:
                kept = self._samples.setdefault(url, deque(maxlen=self.keep))
                fresh = bool(kept) and now - kept[-1].at < self.min_interval_s
            if not fresh:
                sample = scrape(url)
                with self._lock:
                    kept.append(sample)
        with self._lock:
            return {url: list(self._samples.get(url, ())) for url in urls}
