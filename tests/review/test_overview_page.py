"""Overview page under AppTest: plots from the database and from a real worker's /metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from streamlit.testing.v1 import AppTest

from inference.health import HealthServer, Readiness
from inference.metrics import WorkerMetrics
from review.worker_metrics import parse
from tests.review.conftest import frame_record, seed


def _charts(test: AppTest) -> list[object]:
    return list(test.get("vega_lite_chart"))


def _open(app: Callable[..., AppTest]) -> AppTest:
    test = app("olga").run()
    test.switch_page("screens/overview.py")
    return test.run()


@pytest.fixture
def recent_url(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> str:
    """Verdicts of the last hours on two cameras and two products (their rates differ)."""
    from storage.migrate import upgrade

    url = f"sqlite:///{tmp_path}/overview.sqlite"
    upgrade(url)
    now = datetime.now(UTC)
    records = [replace(frame_record(i, camera=f"cam-{'ab'[i % 2]}", anomalous=i % 4 == 0,
                                    product="bottle" if i < 20 else "cable"),
                       captured_at=now - timedelta(minutes=i))
               for i in range(40)]
    seed(url, records)
    monkeypatch.setenv("AGPT_DATABASE_URL", url)
    monkeypatch.delenv("AGPT_WORKER_METRICS_URLS", raising=False)
    return url


@pytest.fixture
def worker_metrics_url() -> Iterator[str]:
    """A worker's real metrics endpoint with some lag and dead letters recorded."""
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.consumer_lag.set(42)
    metrics.dead_letters.labels(reason="bad_image").inc(3)
    metrics.dead_letters.labels(reason="oversized").inc()
    server = HealthServer(registry=registry, readiness=Readiness(), port=0).start()
    yield f"http://127.0.0.1:{server.port}/metrics"
    server.stop()


def test_plots_without_worker_metrics_say_how_to_get_them(recent_url: str,
                                                          app: Callable[..., AppTest]) -> None:
    test = _open(app)

    assert not test.exception
    assert test.title[0].value == "Overview"
    metrics = {m.label: m.value for m in test.metric}
    assert metrics == {"Review backlog": "10", "Reviewed": "0"}
    # Rate per camera, frames/s, rate per product, backlog over time, decisions.
    assert len(_charts(test)) == 5
    assert not test.dataframe  # plots, not tables
    assert any("AGPT_WORKER_METRICS_URLS" in info.value for info in test.info)


def test_lag_and_dead_letters_from_a_running_worker(
    recent_url: str, worker_metrics_url: str, app: Callable[..., AppTest],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dead = "http://127.0.0.1:9/metrics"
    monkeypatch.setenv("AGPT_WORKER_METRICS_URLS", f"{worker_metrics_url},{dead}")

    test = _open(app)

    assert not test.exception
    assert len(_charts(test)) == 7  # + consumer lag + dead letters by reason
    assert any(f"Not answering: {dead}" in w.value for w in test.warning)


def test_parse_reads_lag_and_dead_letters_by_reason() -> None:
    text = (
        "# TYPE agpt_consumer_lag_messages gauge\nagpt_consumer_lag_messages 17.0\n"
        "# TYPE agpt_dlq_messages_total counter\n"
        'agpt_dlq_messages_total{reason="bad_image"} 2.0\n'
        'agpt_dlq_messages_total{reason="schema"} 1.0\n'
        "# TYPE agpt_frames_consumed_total counter\nagpt_frames_consumed_total 99.0\n"
    )

    sample = parse(text, url="u", at=0.0)

    assert sample.lag == 17.0
    assert sample.dead_letters == {"bad_image": 2.0, "schema": 1.0}
    assert sample.consumed == 99.0
