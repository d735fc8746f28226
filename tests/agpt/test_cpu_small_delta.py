"""The committed CPU delta (`make train-small`) loads strictly and reproduces its recorded
`agpt eval` figures (one category of `agpt data synth`, to keep this cheap)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from agpt import wiring
from agpt.settings import Settings
from inference.evaluation import synthetic
from inference.evaluation.runner import evaluate
from inference.model.anomalygpt.anomalygpt_detector import AnomalyGPTDetector

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),  # peft
]

ASSETS = Path(__file__).resolve().parents[2] / "inference" / "model" / "assets"
DELTA = ASSETS / "cpu-small-delta.safetensors"
RECORD = ASSETS / "cpu-small-delta.eval.json"
CATEGORY = "brick"


def test_the_committed_delta_holds_only_trained_tensors_under_20_mb():
    assert DELTA.stat().st_size <= 20 * 1024 * 1024
    with safe_open(DELTA, "pt") as handle:
        keys = list(handle.keys())
    assert {k.split(".")[0] for k in keys} == {"image_decoder", "prompt_learner", "llama_proj",
                                               "llama_model"}


@pytest.mark.slow
def test_the_committed_delta_reproduces_its_recorded_figures(model_cache_dir, tmp_path):
    record = json.loads(RECORD.read_text())
    if record["generator_version"] != synthetic.GENERATOR_VERSION:
        pytest.skip(f"agpt data synth changed (version {record['generator_version']} -> "
                    f"{synthetic.GENERATOR_VERSION}): re-record with the command in {RECORD}")
    settings = Settings(profile="cpu-small", cache_dir=model_cache_dir, device="cpu",
                        cpu_delta=DELTA)
    detector = wiring.detector(settings)  # loads the delta strictly
    assert isinstance(detector, AnomalyGPTDetector)
    root = synthetic.build_textures_set(tmp_path / "synth", categories=[CATEGORY],
                                        seed=record["seed"])
    report = evaluate(detector, root, shots=record["shots"], categories=[CATEGORY])
    got = report["categories"][CATEGORY]
    want = record["report"]["categories"][CATEGORY]
    for key in ("verdict_accuracy", "position_accuracy", "image_auroc", "pixel_auroc"):
        assert got[key] == pytest.approx(want[key], abs=0.01), key
    assert report["verdict_source"] == "llm"
