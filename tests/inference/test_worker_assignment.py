"""/readyz and a gauge say when a worker holds no partition while its group has a backlog."""

from prometheus_client import CollectorRegistry

from inference.health import Readiness
from inference.metrics import WorkerMetrics
from inference.worker import InferenceWorker, WorkerConfig
from ingest.transport.memory import InProcessBroker


class UnassignedConsumer:
    """A member that polls nothing; what the group has waiting is set by the test."""

    def __init__(self):
        self.backlog = 0

    def poll(self, *, max_records, timeout_s):
        return []

    def commit(self, records):
        pass

    def lag(self):
        return {}

    def idle_backlog(self):
        return self.backlog

    def close(self):
        pass


def test_holding_nothing_while_the_group_has_a_backlog_fails_readiness_after_the_grace():
    now = [0.0]
    consumer = UnassignedConsumer()
    registry = CollectorRegistry()
    readiness = Readiness()
    worker = InferenceWorker(
        consumer=consumer, producer=InProcessBroker().producer(), session_factory=None,
        detector=None, config=WorkerConfig(assignment_check_s=5, idle_backlog_grace_s=30),
        metrics=WorkerMetrics(registry), readiness=readiness, clock=lambda: now[0])

    def gauge():
        return registry.get_sample_value("agpt_idle_backlog_messages")

    worker.step()
    assert readiness.ready
    assert gauge() == 0
    consumer.backlog = 120  # e.g. a rebalance that never ends
    for _ in range(6):
        now[0] += 5
        worker.step()
        assert gauge() == 120
    assert "partitions" not in readiness.failing()  # 25 s: within the grace
    now[0] += 5
    worker.step()
    assert readiness.failing() == ["partitions"]
    now[0] += 1
    consumer.backlog = 0
    worker.step()  # checked every 5 s only
    assert readiness.failing() == ["partitions"]
    now[0] += 5
    worker.step()
    assert readiness.ready
    assert gauge() == 0
