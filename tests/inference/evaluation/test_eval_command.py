"""`agpt eval` end to end on the MVTec-layout set of real textures with drawn defects."""

import json

import pytest

from agpt.cli import main
from inference.evaluation.synthetic import build_textures_set

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def textures_root(tmp_path_factory):
    return build_textures_set(tmp_path_factory.mktemp("mvtec") / "textures", seed=0,
                              n_train=4, n_test_good=10, n_test_defect=12)


def test_eval_reports_auroc_well_above_chance(textures_root, model_cache_dir, tmp_path,
                                              monkeypatch, capsys):
    monkeypatch.setenv("AGPT_CACHE_DIR", str(model_cache_dir))
    out = tmp_path / "report.json"
    assert main(["eval", "--data", str(textures_root), "--shots", "1",
                 "--categories", "brick,gravel,textile", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["categories"]) == {"brick", "gravel", "textile"}
    for name, result in report["categories"].items():
        assert result["n_test"] == 22, name
        assert result["image_auroc"] > 0.6, (name, result)
        assert result["pixel_auroc"] > 0.8, (name, result)
    assert report["mean"]["image_auroc"] > 0.7
    assert report["mean"]["pixel_auroc"] > 0.85
    # No LLM in cpu-small: the verdict is the map score against the calibrated threshold.
    assert report["verdict_source"] == "calibrated-threshold"
    for result in report["categories"].values():
        assert 0.0 <= result["verdict_accuracy"] <= 1.0
        assert len(result["verdicts"]) == result["n_test"]
    printed = capsys.readouterr().out
    assert "image AUROC" in printed
    assert "mean" in printed
    assert "above the calibrated threshold (no LLM in this detector)" in printed


def test_eval_uses_the_first_k_sorted_references(textures_root, model_cache_dir, tmp_path,
                                                 monkeypatch):
    # A defect image planted as the first (sorted) reference must poison the memory: the
    # defects it contains no longer stand out, so the result has to change.
    monkeypatch.setenv("AGPT_CACHE_DIR", str(model_cache_dir))
    import shutil

    root = tmp_path / "poisoned"
    shutil.copytree(textures_root / "brick", root / "brick")
    clean = tmp_path / "clean.json"
    main(["eval", "--data", str(root), "--shots", "1", "--json", str(clean)])
    defects = sorted((root / "brick" / "test").glob("[!g]*/*.png"))
    for i, path in enumerate(defects):
        shutil.copy(path, root / "brick" / "train" / "good" / f"000_{i:03d}.png")
    poisoned = tmp_path / "poisoned.json"
    main(["eval", "--data", str(root), "--shots", str(len(defects)), "--json", str(poisoned)])
    before = json.loads(clean.read_text())["categories"]["brick"]["image_auroc"]
    after = json.loads(poisoned.read_text())["categories"]["brick"]["image_auroc"]
    assert after < before - 0.2


def test_eval_streams_the_test_images_and_reports_rates_per_category(
        textures_root, model_cache_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AGPT_CACHE_DIR", str(model_cache_dir))
    reports = {}
    for window in ("0", "6"):
        out = tmp_path / f"w{window}.json"
        against = ["--against", str(tmp_path / "w0.json")] if window == "6" else []
        assert main(["eval", "--data", str(textures_root), "--shots", "2", "--categories",
                     "bracket,grass", "--stream-window", window, "--seed", "3",
                     "--json", str(out), *against]) == 0
        reports[window] = json.loads(out.read_text())
    for window, report in reports.items():
        assert report["stream_window"] == int(window)
        assert report["order_seed"] == 3
        result = report["categories"]["bracket"]
        verdicts = result["verdicts"]
        good = [v for path, v in verdicts.items() if path.startswith("test/good/")]
        bad = [v for path, v in verdicts.items() if not path.startswith("test/good/")]
        assert result["n_good"] == len(good) == 10
        assert result["n_defect"] == len(bad) == 12
        assert result["false_alarm_rate"] == sum(good) / len(good)
        assert result["recall"] == sum(bad) / len(bad)
        assert set(result["kind_auroc"]) == {"missing", "crack", "extra", "dent"}
        assert all(0.0 <= v <= 1.0 for v in result["kind_auroc"].values())
        # Every image's score is kept (for paired comparisons), with the AUROC's interval.
        assert set(result["scores"]) == set(verdicts)
        low, high = result["image_auroc_ci95"]
        assert low <= result["image_auroc"] <= high
    # The second run was compared with the first image by image.
    against = reports["6"]["against"]
    assert against["report"] == str(tmp_path / "w0.json")
    for name in ("bracket", "grass"):
        row = against["categories"][name]
        assert row["baseline_auroc"] == reports["0"]["categories"][name]["image_auroc"]
        assert row["auroc"] == reports["6"]["categories"][name]["image_auroc"]
        assert row["low"] <= row["difference"] <= row["high"]
        assert row["judgement"] in ("better", "worse", "within noise")
    assert "paired bootstrap" in capsys.readouterr().out
    # The stream memory changes the scores (it is what the worker runs), not the contract. On a
    # texture the recent normal frames are closer than the pool somewhere; on a part in random
    # pose the rotated references usually are everywhere, and the map stays the pool's.
    assert (reports["0"]["categories"]["grass"]["pixel_auroc"]
            != reports["6"]["categories"]["grass"]["pixel_auroc"])


def test_eval_refuses_a_negative_stream_window(textures_root, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--data", str(textures_root), "--stream-window", "-1"])
    assert exit_info.value.code == 2
    assert "must be >= 0" in capsys.readouterr().err
