"""Two `agpt eval` reports compared image by image (paired bootstrap of the AUROC change)."""

from __future__ import annotations

import numpy as np
import pytest

from inference.evaluation.comparison import compare_reports, format_comparison
from inference.evaluation.metrics import roc_auc


def _report(scores: dict[str, float]) -> dict[str, object]:
    paths = sorted(scores)
    labels = np.array([not p.startswith("test/good/") for p in paths])
    auroc = roc_auc(labels, np.array([scores[p] for p in paths]))
    return {"categories": {"gravel": {"image_auroc": auroc, "scores": scores}}}


def _scores(shift: float, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    good = {f"test/good/{i:03d}.png": float(rng.normal()) for i in range(60)}
    bad = {f"test/crack/{i:03d}.png": float(rng.normal() + shift) for i in range(36)}
    return good | bad


def test_a_run_that_ranks_every_defect_lower_is_worse_beyond_noise() -> None:
    baseline = _report(_scores(2.0))
    worse = _report({p: (s - 1.5 if "crack" in p else s) for p, s in _scores(2.0).items()})
    (row,) = compare_reports(worse, baseline)
    assert row.judgement == "worse"
    assert row.high < 0
    assert row.difference == pytest.approx(
        worse["categories"]["gravel"]["image_auroc"]  # type: ignore[index]
        - baseline["categories"]["gravel"]["image_auroc"])  # type: ignore[index]
    (back,) = compare_reports(baseline, worse)
    assert back.judgement == "better"
    text = format_comparison([row], baseline_label="s0_1.json")
    assert "s0_1.json" in text
    assert "worse" in text.splitlines()[-1]


def test_a_rerun_with_other_noise_is_within_noise() -> None:
    # Same images, each score jittered a little: the AUROC moves, the judgement does not.
    rng = np.random.default_rng(7)
    base = _scores(1.0)
    rerun = {p: s + float(rng.normal(scale=0.1)) for p, s in base.items()}
    (row,) = compare_reports(_report(rerun), _report(base))
    assert row.judgement == "within noise"
    assert row.low < 0 < row.high


def test_reports_of_different_images_or_without_scores_are_refused() -> None:
    base = _report(_scores(1.0))
    other = _report({p.replace("crack", "hole"): s for p, s in _scores(1.0).items()})
    with pytest.raises(ValueError, match="different images"):
        compare_reports(other, base)
    old = {"categories": {"gravel": {"image_auroc": 0.8}}}
    with pytest.raises(ValueError, match="no per-image scores"):
        compare_reports(old, base)
    with pytest.raises(ValueError, match="share no category"):
        compare_reports({"categories": {"grass": {}}}, base)
