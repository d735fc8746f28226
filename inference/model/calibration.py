"""Per-product decision threshold from the normal references alone (no hand-set value).

Each reference is scored against the others (leave-one-out), which gives the scores that
*normal* parts reach when their nearest normal neighbours are other parts of the pool; with a
single reference, shifted copies of it stand in for other normal parts.

With a handful of such scores, their maximum is a poor threshold: the next normal part exceeds
the largest of n normal scores with probability 1/(n+1) (20 % for a pool of four). The
threshold is therefore the upper bound of a one-sided Student-t *prediction interval* for one
more normal score, at the operator's chosen false-alarm rate α. Scores are distances (> 0)
whose distribution is right-skewed (each is a maximum over many patches), so the interval is
taken on their logarithms (a log-normal model):

    threshold = exp(mean(log s) + t(1 − α; n − 1) · std(log s) · sqrt(1 + 1/n))

and never below the largest normal score. The interval widens automatically for small pools
and noisy products, and tightens as confirmed normals are added to the pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Calibration:
    """The threshold of one product and the normal scores it came from."""

    threshold: float
    normal_scores: tuple[float, ...]
    method: str
    false_alarm_rate: float


def threshold_from_normal_scores(
    scores: np.ndarray, *, false_alarm_rate: float = 0.01, method: str = "leave-one-out"
) -> Calibration:
    """Place the threshold at the prediction bound of the normal scores.

    Args:
        scores: Image scores of normal samples (>= 2; a single score has no spread).
        false_alarm_rate: Target probability that a normal part exceeds the threshold.
        method: How the normal scores were produced (stored for audit).

    Raises:
        ValueError: with fewer than two scores or a rate outside (0, 0.5).
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.size < 2:
        msg = f"calibration needs at least two normal scores, got {values.size}"
        raise ValueError(msg)
    if not 0.0 < false_alarm_rate < 0.5:
        msg = f"false_alarm_rate must be in (0, 0.5), got {false_alarm_rate}"
        raise ValueError(msg)
    if np.any(values <= 0):
        msg = "calibration scores must be positive distances"
        raise ValueError(msg)
    n = values.size
    logs = np.log(values)
    quantile = float(stats.t.ppf(1.0 - false_alarm_rate, df=n - 1))
    bound = math.exp(logs.mean() + quantile * logs.std(ddof=1) * math.sqrt(1.0 + 1.0 / n))
    return Calibration(
        threshold=float(max(bound, values.max())),
        normal_scores=tuple(float(s) for s in values),
        method=method,
        false_alarm_rate=false_alarm_rate,
    )
