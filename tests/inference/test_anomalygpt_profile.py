"""The anomalygpt-7b profile on tiny random official files: build → references → detect → worker."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pytest
import torch
from PIL import Image
from prometheus_client import CollectorRegistry

from inference.metrics import WorkerMetrics
from inference.model.anomalygpt.anomalygpt_detector import AnomalyGPTDetector
from inference.model.interface import Detector
from inference.model.positions import (
    GRID_WORDS,
    NO_ANOMALY,
    answer_text,
    distinct,
    region_positions,
)
from inference.model.testing import offline_tokenizer
from inference.pool import add_references
from inference.profiles import (
    AnomalyGPTProfile,
    OfficialFiles,
    build_detector,
    get_profile,
)
from inference.worker import InferenceWorker, WorkerConfig
from ingest.envelope import FrameEnvelope
from ingest.transport.memory import InProcessBroker
from storage import repositories
from storage.engine import make_engine, make_session_factory
from storage.migrate import upgrade
from tests.inference.model.anomalygpt.official_tiny import (
    TINY,
    build_tiny_detector,
    part_image,
    write_tiny_official,
)

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),  # peft
]
PRODUCT = "metal_nut"
WORDS = {word for row in GRID_WORDS for word in row}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> OfficialFiles:
    return write_tiny_official(tmp_path_factory.mktemp("official"), offline_tokenizer())


@pytest.fixture(scope="module")
def detector(files) -> AnomalyGPTDetector:
    built = build_tiny_detector(files)
    # Four references: plain leave-one-out calibration. (Random weights are not shift-robust:
    # the small-pool shifted copies would put the threshold above every map.)
    built.set_references(PRODUCT, [part_image(i) for i in range(4)])
    return built


@pytest.fixture(scope="module")
def queries() -> list[Image.Image]:
    return [part_image(10 + i, defect=i % 2 == 1) for i in range(6)]


def test_profile_is_chosen_by_name():
    profile = get_profile("anomalygpt-7b")
    assert isinstance(profile, AnomalyGPTProfile)
    assert profile.detector.model_id == "anomalygpt-7b"
    with pytest.raises(ValueError, match="anomalygpt-7b"):
        get_profile("anomalygpt-13b")  # the message lists the known profiles
    with pytest.raises(TypeError, match="not a few-shot backbone profile"):
        build_detector(profile, cache_dir=None)  # type: ignore[arg-type]


def test_the_detector_implements_the_service_protocol(detector):
    def served(d: Detector) -> str:  # what the worker, pool and evaluation are typed against
        return d.verdict_source

    assert served(detector) == "llm"
    assert detector.config.image_size == 224
    assert detector.products() == [PRODUCT]


def test_references_are_encoded_once_and_calibrated_on_normal_scores(detector):
    refs = [part_image(i) for i in range(3)]
    memory = detector.set_references("nut-2", refs, version=7)
    assert (memory.references, memory.version) == (3, 7)
    assert [tuple(t.shape) for t in memory.taps] == [(3, 257, 64)] * len(TINY.imagebind.tap_layers)
    pixels = detector.pixels(refs)
    expected = []
    for i in range(3):  # each reference's map against the other two, from the model itself
        others = torch.cat([pixels[:i], pixels[i + 1 :]])
        expected.append(float(detector.model.anomaly_maps(pixels[i : i + 1],
                                                          references=others).max()))
    # A pool this small also scores each reference's quarter-patch shifted copies (8 each)
    # against the other references, border strip ignored.
    assert memory.calibration.method == "leave-one-out+shifts"
    assert len(memory.calibration.normal_scores) == 3 + 3 * 8
    np.testing.assert_allclose(memory.calibration.normal_scores[:3], expected, rtol=1e-5)
    step, border = 3, 14
    rolled = torch.roll(pixels[2:3], shifts=(step, -step), dims=(2, 3))  # copy 6 of ref 2
    amap = detector.model.anomaly_maps(rolled, references=pixels[:2])[0]
    np.testing.assert_allclose(memory.calibration.normal_scores[3 + 2 * 8 + 5],
                               float(amap[border:-border, border:-border].max()), rtol=1e-5)
    assert memory.calibration.threshold >= max(expected)
    one = detector.set_references("nut-1", refs[:1])
    assert one.calibration.method == "shifted-self"
    assert len(one.calibration.normal_scores) == 8
    assert detector.product("nut-1") is one


def test_detections_follow_the_llm_verdict_and_the_calibrated_map(detector, queries):
    detections = detector.detect(PRODUCT, queries)
    memory = detector.product(PRODUCT)
    pixels = detector.pixels(queries)
    # The verdicts and answers the model gives on its own (every row explained).
    reference = detector.model.verdicts(pixels, PRODUCT, memory.taps, explain="all")
    verdicts = [d.anomalous for d in detections]
    assert any(verdicts), verdicts
    assert not all(verdicts), verdicts
    threshold = memory.calibration.threshold
    for det, ref in zip(detections, reference, strict=True):
        assert det.probability == pytest.approx(ref.probability, abs=1e-5)
        assert det.anomalous == ref.anomalous == (det.probability > 0.5)
        np.testing.assert_allclose(det.anomaly_map, ref.anomaly_map.numpy(), atol=1e-6)
        assert det.threshold == 1.0
        assert det.score == pytest.approx(float(det.anomaly_map.max()) / threshold)
        np.testing.assert_array_equal(det.mask, det.anomaly_map > threshold)
        if det.anomalous:  # generated: the model's own answer, positions from it or the map
            assert det.text == (ref.text or answer_text(True, det.positions))
            peak = det.anomaly_map >= det.anomaly_map.max()
            from_map = distinct(region_positions(det.mask, min_area=16)
                                or region_positions(peak))
            assert det.positions == (ref.positions or from_map)
            assert det.positions
            assert set(det.positions) <= WORDS
        else:
            assert (det.text, det.positions) == (NO_ANOMALY, [])
        evidence = detector.evidence(PRODUCT, det)
        assert evidence["p_yes"] == det.probability
        assert evidence["verdict_source"] == "llm"
        assert evidence["local_threshold"] == threshold
        assert evidence["map_anomalous"] == (det.score > 1.0)
    # The defect (a red disc) stands out in the few-shot map, whatever the random LLM says.
    scores = [d.score for d in detections]
    assert min(scores[1::2]) > max(scores[0::2])
    assert all(d.mask.any() for d in detections[1::2])


def test_assess_gives_the_verdicts_of_detect_without_generating(detector, queries, monkeypatch):
    detections = detector.detect(PRODUCT, queries)
    monkeypatch.setattr(detector.model.llm, "generate", lambda *a, **k: pytest.fail("generated"))
    assessed = detector.assess(PRODUCT, detector.pixels(queries))
    assert assessed.anomalous.tolist() == [d.anomalous for d in detections]
    assert assessed.scores.tolist() == pytest.approx([d.score for d in detections])
    assert assessed.maps.shape == (6, 224, 224)


def test_unknown_product_raises(detector, queries):
    with pytest.raises(KeyError, match="bolt"):
        detector.detect("bolt", queries[:1])
    assert detector.product("bolt") is None


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_worker_stores_the_llm_verdicts_and_answers(files, queries, tmp_path):
    detector = build_tiny_detector(files)  # no product loaded: the worker loads it from the pool
    url = f"sqlite:///{tmp_path / 'worker.sqlite'}"
    upgrade(url)
    factory = make_session_factory(make_engine(url))
    add_references(session_factory=factory, product=PRODUCT, added_by="test",
                   images=[_png(part_image(i)) for i in range(3)])
    broker = InProcessBroker()
    config = WorkerConfig(batch_size=4, batch_wait_ms=10)
    producer = broker.producer()
    for i, image in enumerate(queries):
        frame = FrameEnvelope(camera_id="cam-1", frame_id=f"f-{i}", product=PRODUCT,
                              captured_at=datetime.now(UTC), image=_png(image))
        producer.send(config.frames_topic, key=frame.key, value=frame.encode())
    worker = InferenceWorker(
        consumer=broker.consumer([config.frames_topic], group_id="workers"),
        producer=broker.producer(), session_factory=factory, detector=detector,
        config=config, metrics=WorkerMetrics(CollectorRegistry()),
    )
    consumed = 0
    for _ in range(10):
        outcome = worker.step()
        consumed += outcome.consumed if outcome else 0
        if consumed >= len(queries):
            break
    assert consumed == len(queries)
    assert detector.product(PRODUCT).version > 0  # loaded from the pool by the worker
    expected = detector.detect(PRODUCT, queries)
    with factory() as session:
        views = {v.frame_id: v for v in repositories.list_verdicts(session=session)}
    assert len(views) == len(queries)
    for i, det in enumerate(expected):
        view = views[f"f-{i}"]
        assert (view.anomalous, view.answer, view.positions) == (
            det.anomalous, det.text, det.positions)
        assert view.model_id == "anomalygpt-7b"
        assert view.details["verdict_source"] == "llm"
        assert view.details["p_yes"] == pytest.approx(det.probability, abs=1e-5)
        assert view.score == pytest.approx(det.score, rel=1e-5)
    assert {v.answer for v in views.values() if not v.anomalous} == {NO_ANOMALY}
    assert any(v.anomalous for v in views.values())
