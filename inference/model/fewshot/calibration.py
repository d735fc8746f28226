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

With fewer than ``MIN_LEAVE_ONE_OUT`` references the t quantile explodes (31.8 at n = 2 and
7.0 at n = 3 for α = 1 %: two dissimilar references would put the threshold out of reach), so
each reference is also scored as eight copies shifted by a quarter patch
(:func:`quarter_patch_shifts`), the same part seen by a slightly displaced camera; whole-patch
shifts would re-create the reference's own patches. With one reference the copies are scored
against it (``shifted-self``), otherwise against the other references only
(``leave-one-out+shifts``). Measured on the textile images (DINOv2-S at 448 px, 1 % target):
thresholds 0.38 / 0.40 / 0.38 for 1 / 2 / 3 references, where leave-one-out alone gave
- / 0.51 / 0.43; half-patch shifts overshoot (mean shifted score 0.35 against 0.27 for
leave-one-out: the grid's worst misalignment, not a typical one).

Leave-one-out only sees the variety *among* the references, and references taken in one
session share their camera position, pose and region of the surface; the parts that follow
do not. The few-shot detector therefore scores the copy groups at every pool size
(``every_size``; copies of at most ``MAX_COPIED_REFERENCES`` references, scored against the
others) and keeps the highest bound. Measured on ``agpt data synth`` (brick, whose test
crops come from another band of the photo than its references; local part at 0.5 %):
leave-one-out alone flagged 6.7 % / 8.3 % of the normal test images at 4 / 8 references,
with the copy groups 1.7 % / 1.7 %. Whether the rate holds for the parts that come is not
something the pool can check (the verdict evidence says so below ``MIN_LEAVE_ONE_OUT``
references, where even leave-one-out is missing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import Tensor

# Below this many references, shifted copies add calibration samples (see module docstring).
MIN_LEAVE_ONE_OUT = 4
# References whose copies are scored when every pool size gets copy groups (`normal_score_groups`
# with ``every_size``): a few references show the nuisance; more only cost time.
MAX_COPIED_REFERENCES = 4


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


def tail_probability(calibration: Calibration, scores: np.ndarray) -> np.ndarray:
    """P(a normal score >= s) under the calibration's log-t model, exactly α at the threshold.

    The predictive distribution of one more normal score is the Student-t of the threshold
    bound (module docstring) on log scores; where the threshold was raised to the largest
    normal score, the t variable is stretched so the threshold still maps to the calibrated
    rate α. Scores of different parts (local map, global descriptor) become comparable this
    way: each is a tail probability under its own calibration.

    Args:
        calibration: The part's calibration (its normal scores and threshold).
        scores: Raw scores of that part, any shape.

    Returns:
        Tail probabilities in (0, 1], the shape of ``scores``.
    """
    values = np.maximum(np.asarray(scores, dtype=np.float64), 1e-12)
    normal = np.log(np.asarray(calibration.normal_scores, dtype=np.float64))
    n = normal.size
    alpha = calibration.false_alarm_rate
    quantile = float(stats.t.ppf(1.0 - alpha, df=n - 1))
    centre = float(normal.mean())
    # Stretch so that the threshold sits at the (1 - alpha) quantile.
    span = math.log(calibration.threshold) - centre
    if span <= 0.0:  # degenerate: every normal score equal; fall back to the ratio
        return np.clip(alpha ** (values / calibration.threshold), 1e-300, 1.0)
    z = (np.log(values) - centre) / span * quantile
    return np.exp(stats.t.logsf(z, df=n - 1))


def combined_units(probabilities: Sequence[np.ndarray], false_alarm_rate: float) -> np.ndarray:
    """One image score from the tail probabilities of m calibrated parts, in threshold units.

    Bonferroni: the image is flagged when the smallest tail probability, times m, is below
    the target rate α (each part is calibrated at α / m, so the parts together keep the
    false-alarm rate at or below α). The score is ``log(p) / log(α)`` with
    ``p = m · min_i p_i``: 1.0 at the threshold, larger for rarer images, and it keeps
    ranking when a part joins (one noisy part cannot dominate by a ratio of raw scores).
    ``p`` is not clipped at 1 (scores down to ``log(m) / log(α)``, below 0): clipping tied
    every image whose smallest tail probability exceeded 1/m, i.e. about half the normal
    and many defective images once the global part joins (m = 2 from 3 references).
    Measured on ``agpt data synth`` at 4 shots with the same maps: image AUROC textile
    0.861 -> 0.948, grass 0.664 -> 0.750, gear 0.725 -> 0.762 without the clip.

    Args:
        probabilities: Tail probabilities of each part (same shapes).
        false_alarm_rate: The configured α.

    Returns:
        Scores (> 1 means anomalous).
    """
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probabilities])
    p = np.maximum(len(probabilities) * stacked.min(axis=0), 1e-300)
    return np.log(p) / math.log(false_alarm_rate)


def score_units(calibration: Calibration, scores: np.ndarray) -> np.ndarray:
    """Raw scores of one part in the image score's units: ``log p / log α`` (1.0 = threshold).

    ``p`` is the tail probability under the part's calibration (`tail_probability`): what the
    image score would be if this value were the part's maximum and no other part spoke. A
    normal part's level on this scale is a probability, the same on every product, where the
    raw distance divided by the threshold is not (each product's normal spread differs).
    """
    return combined_units([tail_probability(calibration, scores)], calibration.false_alarm_rate)


def calibration_method(references: int) -> str:
    """How the normal scores of a pool of ``references`` images are produced."""
    if references == 1:
        return "shifted-self"
    return "leave-one-out" if references >= MIN_LEAVE_ONE_OUT else "leave-one-out+shifts"


def quarter_patch_shifts(pixels: Tensor, patch_size: int) -> Tensor:
    """Eight copies of each image rolled by a quarter patch in the eight directions.

    Args:
        pixels: [K, 3, H, W].
        patch_size: The backbone's patch size in pixels.

    Returns:
        [K * 8, 3, H, W], the copies of image ``i`` at rows ``8 i .. 8 i + 7``. The strip
        that wraps around is not the part: :func:`shift_validity` marks the rest.
    """
    copies = torch.stack([torch.roll(pixels, shifts=s, dims=(2, 3))
                          for s in _quarter_steps(patch_size)], dim=1)
    return copies.flatten(0, 1)


def _quarter_steps(patch_size: int) -> list[tuple[int, int]]:
    """The eight (dy, dx) pixel shifts of :func:`quarter_patch_shifts`, in its order."""
    step = max(1, patch_size // 4)
    return [(dy, dx) for dy in (-step, 0, step) for dx in (-step, 0, step) if (dy, dx) != (0, 0)]


def shift_validity(height: int, width: int, patch_size: int) -> Tensor:
    """[8, H, W] bool: the pixels of each :func:`quarter_patch_shifts` copy that did not wrap."""
    rows = torch.arange(height).view(-1, 1)
    cols = torch.arange(width).view(1, -1)
    masks = []
    for dy, dx in _quarter_steps(patch_size):
        # torch.roll puts source pixel r - dy at r: it wrapped unless 0 <= r - dy < height.
        inside_rows = (rows - dy >= 0) & (rows - dy < height)
        inside_cols = (cols - dx >= 0) & (cols - dx < width)
        masks.append(inside_rows & inside_cols)
    return torch.stack(masks)


def seam_reach(patch_size: int, sigma: float = 0.0) -> int:
    """Map pixels around an artificial seam in a copy whose map values the seam can change.

    A seam pixel changes the feature of the patch holding it; bilinear upsampling spreads that
    patch's distance up to one patch beyond its centre (1.5 patches from the seam at most), and
    the map's Gaussian blur adds its radius. Measured on the textile demo pool (448 px, quarter
    patch shifts): the maxima of the shifted copies fell from 0.30-0.54 over the whole map
    (0.29-0.39 without a 14-px border) to 0.23-0.25, the level of leave-one-out (0.24), once
    the pixels within 30 px of the seam were left out.

    Args:
        patch_size: The backbone's patch size in map pixels.
        sigma: The map's Gaussian blur in map pixels (0 = none).
    """
    blur = max(1, math.ceil(4.0 * sigma)) if sigma > 0 else 0
    return math.ceil(1.5 * patch_size) + blur


def valid_max(maps: Tensor, valid: Tensor, reach: int) -> np.ndarray:
    """Per-map maximum [B] over the pixels at least ``reach`` from any invalid pixel.

    The copies of a reference show pixels that no camera took (a wrapped strip, a mirrored
    corner); their seams raise the map around them, which is not how a normal part looks
    (:func:`seam_reach`). Where nothing is left that far from the invalid pixels (tiny maps),
    the maximum over the valid pixels is taken.

    Args:
        maps: [B, H, W] anomaly maps of the copies.
        valid: [B, h, w] bool, the pixels of each copy that show the reference (resized to
            the maps' size, nearest, when h, w differ).
        reach: Distance from an invalid pixel within which the map is ignored.
    """
    masks = valid.float().unsqueeze(1)
    if masks.shape[-2:] != maps.shape[-2:]:
        masks = F.interpolate(masks, size=maps.shape[-2:], mode="nearest")
    # Max pooling of the invalid pixels grows them by `reach` (outside the map counts as valid).
    grown = 1.0 - masks
    if reach > 0:
        grown = F.max_pool2d(grown, 2 * reach + 1, stride=1, padding=reach)
    keep = (grown < 0.5).squeeze(1)
    empty = ~keep.flatten(1).any(1)
    keep[empty] = masks.squeeze(1)[empty] > 0.5
    values = maps.float().masked_fill(~keep.to(maps.device), float("-inf"))
    return values.flatten(1).amax(1).cpu().numpy()


# (query taps, index of the reference to leave out or None) -> [B, H, W] anomaly maps
MapAgainstOthers = Callable[[list[Tensor], int | None], Tensor]


def small_pool_normal_scores(
    pixels: Tensor,
    reference_taps: Sequence[Tensor],
    *,
    encode: Callable[[Tensor], list[Tensor]],
    map_against_others: MapAgainstOthers,
    patch_size: int,
    sigma: float = 0.0,
) -> np.ndarray:
    """Map maxima that normal parts reach, the samples :func:`threshold_from_normal_scores` needs.

    Each reference is scored against the others (leave-one-out); below ``MIN_LEAVE_ONE_OUT``
    references each one's eight quarter-patch shifted copies are scored as well, against the
    other references, or against itself when it is the only one (see the module docstring).
    Both detectors call this with their own feature extractor and map function.

    Args:
        pixels: The K references, preprocessed [K, 3, H, W].
        reference_taps: Their features, per tap with the batch first ([K, ...]).
        encode: Features of preprocessed pixels, in the layout of ``reference_taps``.
        map_against_others: Anomaly maps [B, H, W] of query taps against every reference
            except the given index (all of them for None, the single-reference case).
        patch_size: The backbone's patch size in pixels (shift step, :func:`seam_reach`).
        sigma: The map's Gaussian blur in map pixels (:func:`seam_reach`).

    Returns:
        float scores: K leave-one-out maxima (K > 1), then 8 K shifted-copy maxima (K < 4).
    """
    loo, groups = normal_score_groups(pixels, reference_taps, encode=encode,
                                      map_against_others=map_against_others,
                                      patch_size=patch_size, sigma=sigma)
    return np.concatenate([loo, *groups.values()])


def copied_references(count: int, *, every_size: bool) -> int:
    """How many of ``count`` references :func:`normal_score_groups` scores copies of."""
    if every_size:
        return min(count, MAX_COPIED_REFERENCES)
    return count if count < MIN_LEAVE_ONE_OUT else 0


def normal_score_groups(
    pixels: Tensor,
    reference_taps: Sequence[Tensor],
    *,
    encode: Callable[[Tensor], list[Tensor]],
    map_against_others: MapAgainstOthers,
    patch_size: int,
    every_size: bool = False,
    sigma: float = 0.0,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Leave-one-out maxima and the maxima of each group of copies.

    Args:
        pixels: The K references, preprocessed [K, 3, H, W].
        reference_taps: Their features, per tap with the batch first ([K, ...]).
        encode: Features of preprocessed pixels, in the layout of ``reference_taps``.
        map_against_others: As in :func:`small_pool_normal_scores`.
        patch_size: The backbone's patch size in pixels.
        every_size: Score copy groups at every pool size, not only below
            ``MIN_LEAVE_ONE_OUT`` references; then the copies of the first
            ``MAX_COPIED_REFERENCES`` references only (scored against the others). References
            taken in one session share what leave-one-out cannot see (camera position,
            pose, the region of the surface); the shifted copies add the first (the few-shot
            detector adds rotated copies with :func:`copy_scores` where poses vary).
        sigma: The map's Gaussian blur in map pixels. A copy's maximum leaves out the pixels
            its seams reach (:func:`seam_reach`, :func:`valid_max`).

    Returns:
        ``(leave_one_out, groups)``: K maxima (empty for K = 1) and the copy group
        ``{"shifts": 8 c maxima}`` of the c copied references (none for
        ``MIN_LEAVE_ONE_OUT`` or more references without ``every_size``).
    """
    count = len(pixels)
    loo: list[float] = []
    if count > 1:
        for i in range(count):
            query = [t[i : i + 1] for t in reference_taps]
            loo.append(float(map_against_others(query, i).max()))
    groups: dict[str, np.ndarray] = {}
    if count >= MIN_LEAVE_ONE_OUT and not every_size:
        return np.asarray(loo), groups
    copied = copied_references(count, every_size=every_size)
    height, width = pixels.shape[-2:]
    groups["shifts"] = copy_scores(
        quarter_patch_shifts(pixels[:copied], patch_size),
        shift_validity(height, width, patch_size).repeat(copied, 1, 1),
        copied=copied, references=count, encode=encode,
        map_against_others=map_against_others, reach=seam_reach(patch_size, sigma))
    return np.asarray(loo), groups


def copy_scores(copies: Tensor, valid: Tensor, *, copied: int, references: int,
                encode: Callable[[Tensor], list[Tensor]],
                map_against_others: MapAgainstOthers, reach: int) -> np.ndarray:
    """Map maxima of one group of copies, each scored against the other references.

    Args:
        copies: [R * c, 3, H, W], c copies of each of the first R references, grouped by
            reference.
        valid: [R * c, h, w] bool, the pixels of each copy that show its reference.
        copied: R.
        references: K, the pool size (a single reference is scored against itself).
        encode: As in :func:`normal_score_groups`.
        map_against_others: As in :func:`small_pool_normal_scores`.
        reach: Pixels around the invalid ones left out (:func:`seam_reach`).

    Returns:
        R * c maxima (:func:`valid_max`).
    """
    encoded = encode(copies)
    per = len(encoded[0]) // copied
    scores: list[float] = []
    for i in range(copied):
        query = [t[per * i : per * (i + 1)] for t in encoded]
        maps = map_against_others(query, i if references > 1 else None)
        scores.extend(valid_max(maps, valid[per * i : per * (i + 1)], reach).tolist())
    return np.asarray(scores)
