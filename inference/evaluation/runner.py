"""`agpt eval`: image and pixel AUROC and verdict accuracy of a detector on an MVTec-AD layout.

The verdict is the detector's own: the LLM's yes/no (P(yes) > 0.5 of the single prefill) for
profiles with an LLM, the map score against the calibrated threshold otherwise; the report
says which (``verdict_source``).

The test images are streamed as a line would deliver them: in a seeded shuffled order, in
batches, through the same detector the worker runs (the profile's stream memory included),
so each image is scored against the pool and the images before it only. Per category the
report adds the false-alarm rate on the normal images and the recall on the defective ones
at the calibrated threshold, and the image AUROC of each defect kind against the normals.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from inference.evaluation.answers import position_accuracy
from inference.evaluation.metrics import auroc_interval, roc_auc
from inference.evaluation.mvtec import list_categories, load_mask, reference_paths, test_items
from inference.model.interface import Detector

VERDICT_SOURCES = {
    "llm": "the LLM's yes/no (P(yes) > 0.5 from one prefill)",
    "calibrated-threshold": "map score above the calibrated threshold (no LLM in this detector)",
}


@dataclass(frozen=True)
class CategoryResult:
    """Metrics of one category."""

    image_auroc: float
    pixel_auroc: float
    n_test: int
    verdict_accuracy: float
    threshold: float
    seconds: float
    verdict_source: str = "calibrated-threshold"
    # Defective images whose answer names a position of the mask (see evaluation/answers.py).
    position_accuracy: float = float("nan")
    # Per test image (path under the category): the verdict reported, True = anomalous.
    verdicts: dict[str, bool] = field(default_factory=dict)
    false_alarm_rate: float = 0.0  # normal test images flagged
    recall: float = 0.0  # defective test images flagged
    n_good: int = 0
    n_defect: int = 0
    kind_auroc: dict[str, float] = field(default_factory=dict)  # image AUROC per defect kind
    # 95 % stratified bootstrap interval of image_auroc (`metrics.auroc_interval`).
    image_auroc_ci95: tuple[float, float] = (float("nan"), float("nan"))
    # Per test image: the image score (1.0 = threshold), for paired comparisons of two runs
    # (`comparison.compare_reports`, `agpt eval --against`).
    scores: dict[str, float] = field(default_factory=dict)


def evaluate_category(detector: Detector, root: Path, category: str, *, shots: int,
                      batch_size: int = 8, seed: int = 0) -> CategoryResult:
    """Score every test image of ``category`` against its first ``shots`` normal images.

    The images are scored in a shuffled order (``seed``), in batches of ``batch_size``;
    metrics are reported over all of them.
    """
    started = time.perf_counter()
    references = [Image.open(p).convert("RGB") for p in reference_paths(root, category, shots)]
    memory = detector.set_references(category, references)
    listed = test_items(root, category)
    order = np.random.default_rng(seed).permutation(len(listed))
    items = [listed[int(i)] for i in order]
    size = detector.config.image_size
    scores: list[float] = []
    verdicts: list[bool] = []
    pixel_scores: list[np.ndarray] = []
    pixel_labels: list[np.ndarray] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        images = [Image.open(item.path).convert("RGB") for item in chunk]
        assessed = detector.assess(category, detector.pixels(images))
        scores += assessed.scores.tolist()
        verdicts += assessed.anomalous.tolist()
        for item, amap in zip(chunk, assessed.maps.float().numpy(), strict=True):
            pixel_scores.append(amap.astype(np.float32).ravel())
            pixel_labels.append(load_mask(item.mask_path, (size, size)).ravel())
    labels = np.array([item.anomalous for item in items])
    flagged = np.array(verdicts, dtype=bool)
    image_scores = np.array(scores)
    kinds = sorted({item.defect_type for item in items if item.anomalous})
    kind_auroc = {}
    for kind in kinds:
        chosen = np.array([not item.anomalous or item.defect_type == kind for item in items])
        kind_auroc[kind] = roc_auc(labels[chosen], image_scores[chosen])
    # The answers pass runs after the stream (its window then holds this category's frames).
    positions = position_accuracy(detector, category, items, batch_size=batch_size)
    category_root = Path(root) / category
    by_path = sorted(zip(items, verdicts, scores, strict=True), key=lambda row: row[0].path)
    return CategoryResult(
        image_auroc=roc_auc(labels, np.array(scores)),
        pixel_auroc=roc_auc(np.concatenate(pixel_labels), np.concatenate(pixel_scores)),
        n_test=len(items),
        verdict_accuracy=float((np.array(verdicts) == labels).mean()),
        threshold=memory.calibration.threshold,
        seconds=time.perf_counter() - started,
        verdict_source=detector.verdict_source,
        position_accuracy=positions.accuracy,
        verdicts={item.path.relative_to(category_root).as_posix(): bool(v)
                  for item, v, _ in by_path},
        false_alarm_rate=float(flagged[~labels].mean()) if (~labels).any() else 0.0,
        recall=float(flagged[labels].mean()) if labels.any() else 0.0,
        n_good=int((~labels).sum()),
        n_defect=int(labels.sum()),
        kind_auroc=kind_auroc,
        image_auroc_ci95=auroc_interval(labels, image_scores, seed=seed),
        scores={item.path.relative_to(category_root).as_posix(): float(score)
                for item, _, score in by_path},
    )


def evaluate(detector: Detector, root: Path, *, shots: int,
             categories: Sequence[str] | None = None, seed: int = 0) -> dict[str, object]:
    """Evaluate categories and return the `agpt eval` JSON document.

    Args:
        detector: The detector as the worker runs it (stream memory included).
        root: MVTec-layout dataset root.
        shots: Normal references per category.
        categories: Subset to evaluate (default all).
        seed: Seed of the order in which test images are streamed.

    Returns:
        ``{"categories": {cat: {...}}, "mean": {"image_auroc", "pixel_auroc", ...}, "shots"}``.
    """
    names = list(categories) if categories else list_categories(root)
    if not names:
        msg = f"no MVTec-layout categories (with train/good) under {root}"
        raise ValueError(msg)
    results = {name: evaluate_category(detector, root, name, shots=shots, seed=seed)
               for name in names}
    keys = ("image_auroc", "pixel_auroc", "verdict_accuracy", "position_accuracy",
            "false_alarm_rate", "recall")
    mean = {k: float(np.mean([getattr(r, k) for r in results.values()])) for k in keys}
    return {
        "shots": shots,
        "model_id": detector.config.model_id,
        "verdict_source": detector.verdict_source,
        "stream_window": int(getattr(detector.config, "stream_window", 0)),
        "order_seed": seed,
        "categories": {name: asdict(r) for name, r in results.items()},
        "mean": mean,
    }


def format_table(report: dict[str, object]) -> str:
    """A plain-text table of an evaluation report."""
    lines = [f"{'category':<16}{'image AUROC':>12}{'95 % interval':>15}{'pixel AUROC':>12}"
             f"{'verdict acc':>12}"
             f"{'position acc':>13}{'false al.':>10}{'recall':>8}{'n':>6}"]
    categories = report["categories"]
    assert isinstance(categories, dict)
    for name, r in categories.items():
        low, high = r["image_auroc_ci95"]
        lines.append(f"{name:<16}{r['image_auroc']:>12.4f}{f'{low:.3f}-{high:.3f}':>15}"
                     f"{r['pixel_auroc']:>12.4f}"
                     f"{r['verdict_accuracy']:>12.3f}{r['position_accuracy']:>13.3f}"
                     f"{r['false_alarm_rate']:>10.3f}{r['recall']:>8.3f}{r['n_test']:>6}")
    mean = report["mean"]
    assert isinstance(mean, dict)
    lines.append(f"{'mean':<16}{mean['image_auroc']:>12.4f}{'':>15}{mean['pixel_auroc']:>12.4f}"
                 f"{mean['verdict_accuracy']:>12.3f}{mean['position_accuracy']:>13.3f}"
                 f"{mean['false_alarm_rate']:>10.3f}{mean['recall']:>8.3f}")
    lines.append(f"verdicts: {VERDICT_SOURCES.get(str(report.get('verdict_source')), '?')}")
    return "\n".join(lines)
