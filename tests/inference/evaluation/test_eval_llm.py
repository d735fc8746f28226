"""`agpt eval --model anomalygpt-7b`: verdict accuracy of the LLM beside the AUROCs.

Runs the real command on tiny random files in the official formats; only the model size is
swapped (`use_tiny_official`), so settings, wiring, loading and the evaluation all run as
they would on the 7B files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from agpt.cli import build_parser, main
from inference.evaluation.mvtec import test_items
from inference.model.testing import offline_tokenizer
from tests.inference.model.anomalygpt.official_tiny import (
    OFFICIAL_ENV,
    build_tiny_detector,
    defect_mask,
    part_image,
    use_tiny_official,
    write_tiny_official,
)

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),  # peft
]
CATEGORY = "metal_nut"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_tiny_official(tmp_path_factory.mktemp("official"), offline_tokenizer())


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory) -> Path:
    """One category: 3 normal training images, 4 good and 4 defective test images."""
    root = tmp_path_factory.mktemp("mvtec")
    base = root / CATEGORY
    for folder in ("train/good", "test/good", "test/hole", "ground_truth/hole"):
        (base / folder).mkdir(parents=True)
    for i in range(3):
        part_image(i).save(base / "train" / "good" / f"{i:03d}.png")
    for i in range(4):
        part_image(20 + i).save(base / "test" / "good" / f"{i:03d}.png")
        part_image(30 + i, defect=True).save(base / "test" / "hole" / f"{i:03d}.png")
        defect_mask().save(base / "ground_truth" / "hole" / f"{i:03d}_mask.png")
    return root


@pytest.fixture
def official_env(files, monkeypatch):
    use_tiny_official(monkeypatch, files)
    monkeypatch.delenv("AGPT_PROFILE")  # chosen by --model below


def test_eval_model_reports_the_llm_verdict_accuracy(official_env, files, mvtec_root,
                                                     tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["eval", "--data", str(mvtec_root), "--shots", "2", "--model",
                 "anomalygpt-7b", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["verdict_source"] == "llm"
    assert report["model_id"] == "anomalygpt-7b"
    result = report["categories"][CATEGORY]
    assert result["verdict_source"] == "llm"
    assert result["n_test"] == 8
    for key in ("image_auroc", "pixel_auroc", "verdict_accuracy"):
        assert 0.0 <= result[key] <= 1.0, key
        assert 0.0 <= report["mean"][key] <= 1.0, key
    # The red disc stands out in the few-shot map: the AUROCs are not chance.
    assert result["image_auroc"] == 1.0
    assert result["pixel_auroc"] > 0.8

    # The verdicts in the report are what the detector reports for those images.
    detector = build_tiny_detector(files)
    detector.set_references(CATEGORY, [part_image(0), part_image(1)])
    items = test_items(mvtec_root, CATEGORY)
    detections = detector.detect(CATEGORY, [Image.open(i.path).convert("RGB") for i in items])
    names = [i.path.relative_to(mvtec_root / CATEGORY).as_posix() for i in items]
    assert result["verdicts"] == {n: d.anomalous for n, d in zip(names, detections, strict=True)}
    assert len(set(result["verdicts"].values())) == 2  # both verdicts occur
    correct = [d.anomalous == i.anomalous for d, i in zip(detections, items, strict=True)]
    assert result["verdict_accuracy"] == pytest.approx(sum(correct) / len(correct))

    printed = capsys.readouterr().out
    assert "verdict acc" in printed
    assert "verdicts: the LLM's yes/no" in printed


def test_model_and_profile_name_the_same_setting():
    parser = build_parser()
    for flag in ("--model", "--profile"):
        args = parser.parse_args(["eval", "--data", "d", flag, "anomalygpt-7b"])
        assert args.profile == "anomalygpt-7b"
    assert parser.parse_args(["--profile", "cpu-small-448", "eval", "--data", "d"]).profile == (
        "cpu-small-448")


def test_missing_files_are_named_by_their_settings(files, mvtec_root, monkeypatch, capsys):
    for env in OFFICIAL_ENV.values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("AGPT_IMAGEBIND_CHECKPOINT", str(files.imagebind))
    monkeypatch.setenv("AGPT_LLM_DIR", str(files.llm.parent / "absent"))
    assert main(["eval", "--data", str(mvtec_root), "--model", "anomalygpt-7b"]) == 2
    err = capsys.readouterr().err
    assert "AGPT_PANDAGPT_CHECKPOINT, AGPT_ANOMALYGPT_CHECKPOINT" in err
    assert "AGPT_IMAGEBIND_CHECKPOINT" not in err
    monkeypatch.setenv("AGPT_PANDAGPT_CHECKPOINT", str(files.pandagpt))
    monkeypatch.setenv("AGPT_ANOMALYGPT_CHECKPOINT", str(files.anomalygpt))
    assert main(["eval", "--data", str(mvtec_root), "--model", "anomalygpt-7b"]) == 2
    assert f"AGPT_LLM_DIR={files.llm.parent / 'absent'}" in capsys.readouterr().err
