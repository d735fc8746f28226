"""AGPT_CPU_DELTA / AGPT_CPU_VERDICT: which delta's LLM, or the calibrated threshold, gives
the cpu-small verdict (default: the committed delta's LLM)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from PIL import Image

from agpt import wiring
from agpt.settings import Settings, SettingsError, load_settings
from inference.model.anomalygpt.anomalygpt_detector import AnomalyGPTDetector
from inference.model.anomalygpt.dinov2_encoder import Dinov2Encoder
from inference.model.anomalygpt.model import AnomalyGPT, AnomalyGPTConfig
from inference.model.fewshot.dinov2 import load_dinov2_small
from inference.model.fewshot.fewshot_detector import FewShotDetector
from inference.profiles import COMMITTED_CPU_DELTA

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),  # peft
]


@pytest.fixture(scope="module")
def saved(model_cache_dir: Path, smollm2, tmp_path_factory) -> tuple[Path, AnomalyGPT]:
    """A delta saved from a cpu_small composition (random: a stand-in for a trained one)."""
    lm, tokenizer = smollm2
    config = AnomalyGPTConfig.cpu_small()
    torch.manual_seed(11)
    model = AnomalyGPT.compose(
        encoder=Dinov2Encoder(load_dinov2_small(model_cache_dir), config.encoder_taps or ()),
        lm=copy.deepcopy(lm), tokenizer=tokenizer, config=config)
    path = tmp_path_factory.mktemp("cpu-delta") / "pytorch_model.pt"
    model.save_delta(path)
    return path, model


def settings(cache_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"profile": "cpu-small", "cache_dir": cache_dir, "device": "cpu"}
    return Settings(**(values | overrides))


def test_asked_for_the_threshold_the_verdict_is_the_calibrated_threshold(model_cache_dir):
    detector = wiring.detector(settings(model_cache_dir, cpu_verdict="threshold"))
    assert isinstance(detector, FewShotDetector)
    assert detector.verdict_source == "calibrated-threshold"


@pytest.mark.slow
def test_by_default_the_committed_delta_gives_the_verdict(model_cache_dir, monkeypatch):
    # The suite runs with AGPT_CPU_VERDICT=threshold (tests/conftest.py); a plant does not.
    monkeypatch.delenv("AGPT_CPU_VERDICT", raising=False)
    monkeypatch.delenv("AGPT_CPU_DELTA", raising=False)
    chosen = load_settings(profile="cpu-small", cache_dir=model_cache_dir)
    assert chosen.cpu_verdict == "llm"
    assert chosen.cpu_delta is None
    detector = wiring.detector(chosen)
    assert isinstance(detector, AnomalyGPTDetector)
    assert detector.verdict_source == "llm"
    assert COMMITTED_CPU_DELTA.is_file()
    # The composition reads 224 px maps: the 448 px profile keeps the threshold.
    wide = wiring.detector(load_settings(profile="cpu-small-448", cache_dir=model_cache_dir))
    assert wide.verdict_source == "calibrated-threshold"
    monkeypatch.setenv("AGPT_CPU_VERDICT", "lm")
    with pytest.raises(SettingsError, match="AGPT_CPU_VERDICT"):
        load_settings()


def test_a_missing_delta_file_is_a_settings_error(model_cache_dir, tmp_path):
    with pytest.raises(SettingsError, match="AGPT_CPU_DELTA"):
        wiring.detector(settings(model_cache_dir, cpu_delta=tmp_path / "none.pt"))
    present = tmp_path / "delta.pt"
    present.write_bytes(b"")
    with pytest.raises(SettingsError, match="224 px"):
        wiring.detector(settings(model_cache_dir, cpu_delta=present), image_size=448)
    with pytest.raises(SettingsError, match="224 px"):
        wiring.detector(settings(model_cache_dir, cpu_delta=present, profile="cpu-small-448"))


@pytest.mark.slow
def test_with_a_delta_the_llm_gives_the_verdict(model_cache_dir, saved, textile_files):
    path, source = saved
    detector = wiring.detector(settings(model_cache_dir, cpu_delta=path))
    assert isinstance(detector, AnomalyGPTDetector)
    assert detector.verdict_source == "llm"
    assert detector.config.model_id == "cpu-small/dinov2-s+smollm2-135m@224"
    loaded = dict(detector.model.named_parameters())
    for name, param in source.named_parameters():  # every trained tensor came from the file
        if name.startswith(("image_decoder", "prompt_learner", "llm.llama_proj")) or (
                ".lora_" in name):
            torch.testing.assert_close(loaded[name], param.half().float(), rtol=0, atol=0)
    images = [Image.open(p).convert("RGB") for p in textile_files["nominal"][:3]]
    detector.set_references("textile", images[:2])
    (detection,) = detector.detect("textile", images[2:])
    assert 0.0 < detection.probability < 1.0
    assert detector.evidence("textile", detection)["verdict_source"] == "llm"
