"""Every kept frame's anomaly map is stored as an 8-bit PNG at map resolution with its range."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from inference.metrics import WorkerMetrics
from inference.worker import InferenceWorker, WorkerConfig, heatmap_png
from ingest.sources import frames_from_files
from ingest.transport.memory import InProcessBroker
from storage import repositories
from storage.engine import make_engine, make_session_factory
from storage.migrate import upgrade
from tests.fixtures.pools import add_textile_pool


def test_heatmap_png_round_trips_within_one_grey_level() -> None:
    rng = np.random.default_rng(0)
    anomaly_map = rng.uniform(0.2, 3.7, size=(32, 48)).astype(np.float32)

    png, low, high = heatmap_png(anomaly_map)
    pixels = np.asarray(Image.open(io.BytesIO(png)))

    assert pixels.shape == (32, 48)
    assert pixels.dtype == np.uint8
    assert (low, high) == (pytest.approx(anomaly_map.min()), pytest.approx(anomaly_map.max()))
    decoded = low + pixels.astype(np.float32) / 255 * (high - low)
    assert np.abs(decoded - anomaly_map).max() <= (high - low) / 255
    flat_png, flat_low, flat_high = heatmap_png(np.full((4, 4), 0.5, dtype=np.float32))
    assert flat_low == flat_high == 0.5
    assert not np.asarray(Image.open(io.BytesIO(flat_png))).any()


@pytest.mark.slow
def test_flagged_frames_keep_their_heatmap(cpu_detector, tmp_path, textile_files) -> None:
    url = f"sqlite:///{tmp_path / 'heat.sqlite'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    add_textile_pool(sessions, textile_files, cpu_detector)  # not an earlier test's pool
    config = WorkerConfig(batch_size=4, batch_wait_ms=20)  # store_images="flagged"
    broker = InProcessBroker()
    producer = broker.producer()
    paths = textile_files["nominal"][10:11] + textile_files["global"][:1]
    for frame in frames_from_files(paths, product="textile", camera_id="cam-1"):
        producer.send(config.frames_topic, key=frame.key, value=frame.encode())
    worker = InferenceWorker(
        consumer=broker.consumer([config.frames_topic], group_id="w"),
        producer=producer, session_factory=sessions, detector=cpu_detector, config=config,
        metrics=WorkerMetrics(CollectorRegistry()))
    for _ in range(20):
        if worker.step() is not None:
            break

    with sessions() as session:
        details = [repositories.get_frame_detail(session=session, verdict_id=v.id)
                   for v in repositories.list_verdicts(session=session)]
    flagged = [d for d in details if d.verdict.anomalous]
    normal = [d for d in details if not d.verdict.anomalous]
    assert flagged
    for detail in flagged:
        heat = Image.open(io.BytesIO(detail.images.heatmap_png))
        assert heat.size == (224, 224)
        assert heat.mode == "L"
        assert detail.images.heatmap_min < detail.images.heatmap_max
    # Without a stored image there is nothing to overlay a heatmap on.
    assert all(d.images.heatmap_png is None and d.images.image is None for d in normal)
