"""Two `agpt eval` reports on the same images, compared beyond the test set's noise.

"More references never hurt" and "this change helps" are claims about a difference of two
AUROCs measured on a few dozen images per class; each AUROC alone moves by several points
with the draw of the test set. The two runs scored the same images, so their difference is
judged with a paired bootstrap (`metrics.auroc_difference_interval`): a category is *worse*
only where the whole 95 % interval of the difference lies below zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

import numpy as np

from inference.evaluation.metrics import auroc_difference_interval
from inference.evaluation.mvtec import GOOD

Judgement = Literal["better", "worse", "within noise"]


@dataclass(frozen=True)
class CategoryComparison:
    """Image AUROC of one category in two runs and their paired difference."""

    category: str
    baseline_auroc: float
    auroc: float
    difference: float
    low: float  # 95 % paired-bootstrap interval of the difference
    high: float
    judgement: Judgement


def compare_reports(report: dict[str, object], baseline: dict[str, object], *,
                    seed: int = 0) -> list[CategoryComparison]:
    """Compare every category the two reports share.

    Args:
        report: An `agpt eval` JSON document (`runner.evaluate`).
        baseline: Another, of the same data set (e.g. the same profile at 1 shot).
        seed: Seed of the bootstrap draws.

    Raises:
        ValueError: The reports share no category, a category lacks per-image scores (a
            report written before they were recorded), or the two runs scored different
            images.
    """
    ours, theirs = _categories(report), _categories(baseline)
    shared = [name for name in ours if name in theirs]
    if not shared:
        msg = "the two reports share no category"
        raise ValueError(msg)
    rows = []
    for name in shared:
        scores, base = _scores(ours[name], name), _scores(theirs[name], name)
        if set(scores) != set(base):
            msg = f"{name}: the two reports scored different images"
            raise ValueError(msg)
        paths = sorted(scores)
        # A report's paths are ``test/<defect_type>/<file>`` (the layout's `mvtec.TestItem`).
        labels = np.array([PurePosixPath(path).parts[1] != GOOD for path in paths])
        difference, low, high = auroc_difference_interval(
            labels, np.array([base[p] for p in paths]), np.array([scores[p] for p in paths]),
            seed=seed)
        judgement: Judgement = "worse" if high < 0 else "better" if low > 0 else "within noise"
        rows.append(CategoryComparison(name, float(theirs[name]["image_auroc"]),
                                       float(ours[name]["image_auroc"]), difference, low, high,
                                       judgement))
    return rows


def format_comparison(rows: list[CategoryComparison], *, baseline_label: str) -> str:
    """A plain-text table of `compare_reports` (one line per category)."""
    lines = [f"image AUROC against {baseline_label} (paired bootstrap, 95 %):",
             f"{'category':<16}{'baseline':>10}{'this run':>10}{'change':>9}"
             f"{'interval':>20}  judgement"]
    for r in rows:
        interval = f"[{r.low:+.3f}, {r.high:+.3f}]"
        lines.append(f"{r.category:<16}{r.baseline_auroc:>10.4f}{r.auroc:>10.4f}"
                     f"{r.difference:>+9.3f}{interval:>20}  {r.judgement}")
    return "\n".join(lines)


def _categories(report: dict[str, object]) -> dict[str, dict[str, object]]:
    categories = report.get("categories")
    if not isinstance(categories, dict):
        msg = "not an `agpt eval` report (no categories)"
        raise ValueError(msg)
    return categories


def _scores(result: dict[str, object], name: str) -> dict[str, float]:
    scores = result.get("scores")
    if not isinstance(scores, dict) or not scores:
        msg = (f"{name}: the report has no per-image scores (written before they were "
               "recorded); run `agpt eval` again")
        raise ValueError(msg)
    return {str(path): float(value) for path, value in scores.items()}
