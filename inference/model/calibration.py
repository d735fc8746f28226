"""Per-product decision threshold from the normal references alone (no hand-set value).

Each reference is scored against the others (leave-one-out), which gives the score a
*normal* part reaches when its nearest normal neighbours are other parts of the pool; with a
single reference, shifted copies of it play the role of other normal parts. The threshold sits
above every such normal score by a margin proportional to their spread, so it scales with the
product's own variability instead of a constant chosen by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """The threshold of one product and the normal scores it came from."""

    threshold: float
    normal_scores: tuple[float, ...]
    method: str


def threshold_from_normal_scores(
    scores: np.ndarray, *, margin: float = 0.15, method: str = "leave-one-out"
) -> Calibration:
    """Place the threshold above the normal scores.

    threshold = max(s) + margin · max(max(s) − min(s), mean(s)) — the margin is relative to
    the product's own score scale, so products with noisier normals get a wider band.

    Args:
        scores: Image scores of normal samples (>= 1).
        margin: Relative margin above the largest normal score.
        method: How the normal scores were produced (stored for audit).
    """
    if scores.size == 0:
        msg = "calibration needs at least one normal score"
        raise ValueError(msg)
    top = float(scores.max())
    scale = max(top - float(scores.min()), float(scores.mean()))
    return Calibration(
        threshold=top + margin * scale,
        normal_scores=tuple(float(s) for s in scores),
        method=method,
    )
