"""Worker metrics: bounded labels, readiness gauges, pool reload failures."""

from prometheus_client import CollectorRegistry, generate_latest

from inference.health import Readiness
from inference.metrics import OVERFLOW_LABEL, BoundedLabel, WorkerMetrics
from inference.pool_updates import PoolUpdates
from ingest.transport.base import TransportError


def test_bounded_label_keeps_the_first_values_then_overflows():
    label = BoundedLabel(2)
    assert [label(v) for v in ("a", "b", "c", "a", "d", "b")] == [
        "a", "b", OVERFLOW_LABEL, "a", OVERFLOW_LABEL, "b"]


def test_hostile_camera_ids_cannot_grow_the_series_without_bound():
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, max_cameras=3)
    for i in range(50):
        metrics.record_verdict(product="p", camera=f"cam-{i}", anomalous=i % 2 == 0)
    cameras = {s.labels["camera"] for family in registry.collect()
               if family.name == "agpt_verdicts" for s in family.samples
               if s.name == "agpt_verdicts_total"}
    assert cameras == {"cam-0", "cam-1", "cam-2", OVERFLOW_LABEL}
    total = sum(registry.get_sample_value("agpt_verdicts_total",
                                          {"outcome": o, "product": "p", "camera": c}) or 0
                for o in ("normal", "anomalous") for c in cameras)
    assert total == 50  # nothing is lost, only folded into _other


def test_readiness_is_exported_at_scrape_time():
    registry = CollectorRegistry()
    readiness = Readiness("model", "consumer")
    WorkerMetrics(registry, readiness=readiness)
    assert registry.get_sample_value("agpt_worker_ready") == 0
    assert registry.get_sample_value("agpt_worker_ready_condition", {"condition": "model"}) == 0
    readiness.set("model", True)
    readiness.set("consumer", True)
    assert registry.get_sample_value("agpt_worker_ready") == 1
    readiness.set("database", False)
    assert registry.get_sample_value("agpt_worker_ready") == 0
    body = generate_latest(registry).decode()
    assert 'agpt_worker_ready_condition{condition="database"} 0.0' in body


class _BrokenConsumer:
    """A pool-event consumer whose broker is gone (the edge of the system)."""

    def poll(self, *, max_records, timeout_s):
        msg = "broker unreachable"
        raise TransportError(msg)

    def close(self):
        pass


def test_unreadable_pool_events_are_counted_as_reload_failures():
    registry = CollectorRegistry()
    updates = PoolUpdates(_BrokenConsumer(), metrics=WorkerMetrics(registry))
    assert updates.apply(detector=None, session_factory=None) == []
    assert registry.get_sample_value("agpt_pool_reload_failures_total",
                                      {"reason": "events"}) == 1
