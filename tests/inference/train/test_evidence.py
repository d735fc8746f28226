"""Training reads the served CPU composition's evidence: the same map on the same scale."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from inference.model.anomalygpt.anomalygpt_detector import (
    AnomalyGPTDetector,
    AnomalyGPTDetectorConfig,
)
from inference.model.anomalygpt.dinov2_encoder import Dinov2Encoder
from inference.model.anomalygpt.model import PROMPT_MAP_CAP, AnomalyGPT
from inference.model.testing import tiny_composition
from inference.profiles import Profile, build_detector, get_profile
from inference.train.datasets import wheel_products
from inference.train.evidence import FewShotEvidence
from inference.train.samples import SampleSource
from tests.inference.train.test_trainer import TINY

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),  # peft
]

# The trainer tests' tiny composition: it already reads the calibrated map.
CALIBRATED = TINY


def few_shot(cache: Path, stream_window: int = 0):  # noqa: ANN201
    profile = get_profile("cpu-small")
    assert isinstance(profile, Profile)
    return build_detector(profile, cache_dir=cache, stream_window=stream_window)


def composition(cache: Path) -> AnomalyGPT:
    from inference.model.fewshot.dinov2 import load_dinov2_small

    encoder = Dinov2Encoder(load_dinov2_small(cache), (3, 5, 7, 9)).eval()
    return tiny_composition(encoder, CALIBRATED)


@pytest.mark.slow
def test_training_evidence_is_what_the_served_detector_feeds_the_prompt_learner(
        model_cache_dir):
    source = SampleSource(wheel_products(("coins", "camera")), seed=3, shots=(1,),
                          pools_per_product=1, anomaly_ratio=0.5)
    samples = [source.sample(i) for i in range(3)]
    maps, scales = FewShotEvidence(few_shot(model_cache_dir), source.pool)(samples)
    assert tuple(maps.shape) == (3, 224, 224)
    assert tuple(scales.shape) == (3,)

    served = AnomalyGPTDetector(composition(model_cache_dir),
                                AnomalyGPTDetectorConfig(model_id="test"),
                                evidence=few_shot(model_cache_dir))
    for index, sample in enumerate(samples):
        references = [Image.fromarray(r) for r in source.pool(sample.pool).references]
        memory = served.set_references("part", references)
        assert memory.map_scale == pytest.approx(float(scales[index]))
        assessed = served.assess("part", served.pixels([Image.fromarray(sample.image)]))
        torch.testing.assert_close(assessed.maps[0], maps[index])
        assert assessed.probability is not None
        assert 0 < float(assessed.probability[0]) < 1
    # The prompt learner reads the map in threshold units, capped.
    read = served.model.prompt_map(maps, scales * 1e-6)
    assert float(read.max()) == PROMPT_MAP_CAP


@pytest.mark.slow
def test_scored_training_evidence_is_what_the_served_detector_feeds_a_scored_model(
        model_cache_dir):
    source = SampleSource(wheel_products(("coins", "camera")), seed=3, shots=(1,),
                          pools_per_product=1, anomaly_ratio=1.0)
    samples = [source.sample(i) for i in range(2)]
    detector = few_shot(model_cache_dir)
    maps, scales = FewShotEvidence(detector, source.pool)(samples)
    scored, _ = FewShotEvidence(detector, source.pool, scored=True)(samples)
    # The same map on the image score's scale: monotone, the threshold at 1.0.
    for index in range(len(samples)):
        raw, units = maps[index].flatten(), scored[index].flatten()
        order = raw.argsort()
        assert bool((units[order].diff() >= -1e-5).all())
        assert bool(((raw > scales[index]) == (units > 1.0)).all())

    model = composition(model_cache_dir)
    model.config = replace(model.config, prompt_map="scored", prompt_floor=0.5)
    served = AnomalyGPTDetector(model, AnomalyGPTDetectorConfig(model_id="test"),
                                evidence=few_shot(model_cache_dir))
    for index, sample in enumerate(samples):
        references = [Image.fromarray(r) for r in source.pool(sample.pool).references]
        served.set_references("part", references)
        pixels = served.pixels([Image.fromarray(sample.image)])
        assessed = served.assess("part", pixels)
        assert assessed.probability is not None
        torch.testing.assert_close(assessed.maps[0], maps[index])  # served map: raw units
        (read,) = model.verdicts(pixels, "part", maps=maps[index : index + 1],
                                 prompt_maps=scored[index : index + 1], explain="none")
        assert float(assessed.probability[0]) == pytest.approx(read.probability, abs=1e-5)
def test_evidence_needs_pooled_samples_and_no_stream_memory(model_cache_dir):
    source = SampleSource(wheel_products(("coins", "camera")), seed=3)
    with pytest.raises(ValueError, match="stream memory"):
        FewShotEvidence(few_shot(model_cache_dir, stream_window=4), source.pool)
    evidence = FewShotEvidence(few_shot(model_cache_dir), source.pool)
    with pytest.raises(ValueError, match="pooled samples"):
        evidence([source.sample(0)])


def test_an_evidence_detector_needs_a_calibrated_prompt_map(model_cache_dir):
    model = composition(model_cache_dir)
    model.config = replace(model.config, prompt_map="raw")
    with pytest.raises(ValueError, match="calibrated prompt maps"):
        AnomalyGPTDetector(model, AnomalyGPTDetectorConfig(), evidence=few_shot(model_cache_dir))
