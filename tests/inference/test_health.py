"""The worker's health server: liveness, readiness and metrics over real HTTP."""

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from inference.health import HealthServer, Liveness, Readiness
from inference.metrics import WorkerMetrics


def get(port, path):
    """(status, content type, body) of GET ``path``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def readiness():
    return Readiness("model", "consumer")


@pytest.fixture
def server(registry, readiness):
    health = HealthServer(registry=registry, readiness=readiness, port=0,
                          host="127.0.0.1").start()
    yield health
    health.stop()


def test_readiness_holds_only_when_every_condition_does():
    readiness = Readiness("model", "consumer")
    assert not readiness.ready
    assert readiness.failing() == ["consumer", "model"]
    readiness.set("model", True)
    readiness.set("consumer", True)
    assert readiness.ready
    readiness.set("database", False)  # a condition may appear later, e.g. on a failed write
    assert readiness.failing() == ["database"]


def test_liveness_answers_before_readiness(server, readiness):
    assert get(server.port, "/healthz")[0] == 200
    status, _, body = get(server.port, "/readyz")
    assert status == 503
    assert "consumer" in body
    assert "model" in body

    readiness.set("model", True)
    readiness.set("consumer", True)
    assert get(server.port, "/readyz")[0] == 200

    readiness.set("database", False)
    status, _, body = get(server.port, "/readyz")
    assert (status, body.strip()) == (503, "not ready: database")
    assert get(server.port, "/healthz")[0] == 200


def test_metrics_expose_the_injected_registry_only(server, registry):
    metrics = WorkerMetrics(registry)
    metrics.db_write_failures.inc(2)
    Counter("agpt_test_probe_total", "A probe.", registry=registry).inc()

    status, content_type, body = get(server.port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert "agpt_db_write_failures_total 2.0" in body
    assert "agpt_test_probe_total 1.0" in body
    assert "python_gc_objects_collected_total" not in body  # not the global registry


def test_unknown_paths_are_404_and_stop_releases_the_port(registry, readiness):
    health = HealthServer(registry=registry, readiness=readiness, port=0,
                          host="127.0.0.1").start()
    port = health.port
    assert get(port, "/nope")[0] == 404
    health.stop()
    health.stop()  # idempotent
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_the_default_bind_is_loopback_only(registry, readiness):
    health = HealthServer(registry=registry, readiness=readiness, port=0).start()
    try:
        assert health._server.server_address[0] == "127.0.0.1"
        assert get(health.port, "/healthz")[0] == 200
    finally:
        health.stop()


def test_healthz_fails_once_a_held_batch_makes_no_progress(registry, readiness):
    now = [100.0]
    liveness = Liveness(bound_s=30, clock=lambda: now[0])
    health = HealthServer(registry=registry, readiness=readiness, port=0,
                          liveness=liveness).start()
    try:
        now[0] += 1000  # idle, nothing held: waiting for work is healthy
        assert get(health.port, "/healthz")[0] == 200
        liveness.holding(True)
        now[0] += 29
        assert get(health.port, "/healthz")[0] == 200
        liveness.tick()  # e.g. a retry wait during a database outage ended
        now[0] += 29
        assert get(health.port, "/healthz")[0] == 200
        now[0] += 2
        status, _, body = get(health.port, "/healthz")
        assert status == 503
        assert "stalled" in body
        assert "31 s" in body
        liveness.holding(False)
        assert get(health.port, "/healthz")[0] == 200
    finally:
        health.stop()
