"""The few-shot detector: patch features → anomaly map → calibrated verdict, mask, answer.

Composes a patch-feature extractor (any module mapping normalised pixels to a list of
per-tap patch features) with AnomalyGPT's few-shot map, a per-product threshold calibrated
on the pool's normal images, and AnomalyGPT's answer wording.

The image score puts every part on one calibrated scale: the local part (maximum of the map)
and, with >= 3 references, the global part (image descriptor) are each turned into the tail
probability of a normal score under their own calibration at α / m (m parts), combined by
Bonferroni (`calibration.combined_units`), and reported as ``log(p) / log(α)``: 1.0 is the
threshold, so ``score > 1`` still means anomalous and the false-alarm budget α is shared by
the parts instead of spent once per part. The global part enters only where it is
significant on its own (its tail probability below α / m); elsewhere the ranking is the
local part's, so adding references (which switches the global check on) cannot scramble it.

Where every reference shows a part on a plain background (``silhouette_check``), a third part
joins: the query's silhouette against the posed references' (`silhouette_check`), which
sees missing and added material and dents that patch matching explains away with the gap
between two teeth or a straight edge elsewhere. Its blob map also enters the anomaly map,
in the local part's units. Such pools calibrate the patch map without the halves group
(`_region_scores`): halves model another region of a surface, and on parts they set a
threshold no defect reached (recall 0 % at 4 and 8 references on ``agpt data synth``).

With ``stream_window`` > 0 each patch distance d_pool is combined with its stream distance
d_stream (`stream`) as ``(1 − w) · d_pool + w · min(d_pool, d_stream)`` (``stream_weight``
w, 1.0 by default: the lower of the two): the recent frames can only lower a patch's
distance. So the map of any frame is at most its pool-only map, and the threshold
calibrated on the pool alone keeps its false-alarm bound whatever the window holds
(restart, pool change, a defective run); frames the detector flags never enter the window,
so a flagged defect repeated on the next parts is compared with clean frames only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..interface import Assessment, Detection
from ..positions import answer_text, distinct, region_positions
from ..preprocess import to_tensor
from .calibration import (
    MIN_LEAVE_ONE_OUT,
    Calibration,
    MapAgainstOthers,
    combined_units,
    copied_references,
    copy_scores,
    normal_score_groups,
    quarter_patch_shifts,
    score_units,
    seam_reach,
    shift_validity,
    tail_probability,
    threshold_from_normal_scores,
    valid_max,
)
from .memory import (
    build_memory,
    coreset_indices,
    gaussian_blur,
    image_descriptors,
    memory_map,
)
from .pose import Silhouette
from .silhouette_check import (
    copied_whole,
    grey_levels,
    pool_silhouettes,
    query_maps,
    rotated_copies,
)
from .silhouette_check import (
    normal_scores as silhouette_normal_scores,
)
from .stream import StreamWindow, combine_with_pool

PatchExtractor = Callable[[Tensor], list[Tensor]]  # [B,3,H,W] -> per tap [B, N, C]


@dataclass(frozen=True)
class FewShotConfig:
    """Few-shot detector settings.

    Attributes:
        image_size: Square input size in pixels (multiple of ``patch_size``).
        patch_size: Backbone patch size (14 for DINOv2, ImageBind).
        mean, std: Input normalisation of the backbone.
        sigma: Gaussian smoothing of the map, in map pixels.
        false_alarm_rate: Target rate of normal parts flagged, for threshold calibration.
        global_check: Also score the image-level descriptor (mean patch feature per tap),
            which catches texture/colour shifts over the whole part that patch matching
            misses (needs >= 3 references to calibrate).
        min_region_area: Mask regions smaller than this (map pixels) are not reported.
        augment_references: Add rotated views of every reference to the memory (every
            ``rotation_step`` degrees, reflect-padded so no black corners enter the memory):
            parts photographed in any pose are matched without pose-specific references,
            and surfaces gain normal patches for very few shots.
        rotation_step: Degrees between the rotated views (a divisor of 360).
        max_memory_patches: Cap on memory rows per tap; larger pools are reduced to a greedy
            k-center coreset, which bounds the matching cost per frame (None = no cap).
        bf16: Run the backbone under bf16 autocast (faster only where the CPU has AMX or on
            GPUs; slower than fp32 on AVX-512-only CPUs).
        model_id: Recorded with every verdict.
        stream_window: Recent frames per product kept as a stream memory (0 = off; see
            `stream`); each frame is scored against the pool and the earlier frames only.
        stream_fraction: Share of the window frames whose distances are averaged (lowest).
        stream_weight: How far the stream may lower a patch distance (`stream.combine_with_pool`:
            0 = not at all, 1 = down to the stream distance).
        silhouette_check: Where every reference shows a part on a plain background, also
            compare each query's silhouette with the posed references' (`silhouette_check`),
            and calibrate the patch map without the surface's halves group.
        stream_global: Let the stream window lower the global part's distance too
            (`stream.StreamWindow.global_distances`), held to the lower of the references'
            bound and the window's own bound (`stream.StreamWindow.global_calibration`, the
            leave-one-out streamed distances of the window's frames; `GlobalPart`). It
            removes the global part's false alarms on a drifting line (``agpt data synth``
            seed 1, 8 shots: grass 17 -> 2 of 60, README) without letting the stream sink a
            subtle texture-statistics defect under a bound made for pool-only distances.
        stream_global_frames: Frames the window must hold before the global part is
            streamed (its bound needs a spread to estimate; until then the pool distance and
            the references' bound, and the evidence says ``global_bound: references``).
    """

    image_size: int = 224
    patch_size: int = 14
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    sigma: float = 4.0
    false_alarm_rate: float = 0.01
    min_region_area: int = 16
    global_check: bool = True
    augment_references: bool = False
    max_memory_patches: int | None = 4096
    bf16: bool = False
    model_id: str = "fewshot-dinov2s"
    rotation_step: int = 30
    stream_window: int = 0
    stream_fraction: float = 0.15
    stream_weight: float = 1.0
    silhouette_check: bool = False
    stream_global: bool = True
    stream_global_frames: int = 8

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, cols)."""
        side = self.image_size // self.patch_size
        return side, side


@dataclass
class ProductMemory:
    """Reference patch memory and calibrated threshold of one product."""

    product: str
    memory: list[Tensor]  # per tap [M, C], unit rows
    owners: list[Tensor]  # per tap [M]: index of the reference each row came from
    references: int
    calibration: Calibration
    version: int = 0
    descriptors: Tensor | None = None  # [K, D] unit image-level descriptors
    global_calibration: Calibration | None = None
    silhouettes: list[Silhouette] | None = None  # per reference, for a pool of parts
    silhouette_calibration: Calibration | None = None


@dataclass(frozen=True)
class GlobalPart:
    """The image-level part of a batch's judgement.

    Attributes:
        scores: [B] the distances judged: to the pool's references, or lowered by the stream
            window (`stream.StreamWindow.global_distances`).
        calibration: The bound they are held to: the references' leave-one-out bound; for
            streamed distances the lower of it and the window's own bound
            (`StreamWindow.global_calibration`). Either bound alone holds the rate for the
            streamed distance (it is never above the pool distance the references' bound was
            made for, and the window's is made of streamed distances of the line's normal
            frames), so the lower one flags at most the two rates together while a subtle
            defect the stream lowers under the references' bound can still cross the
            window's, which the stream tightened as much.
        streamed: Whether ``scores`` are streamed (the window was ready).
        descriptors: [B, C] the frames' image descriptors (to join the window).
        pool_scores: [B] the distances to the pool's references alone.
    """

    scores: Tensor
    calibration: Calibration
    descriptors: Tensor
    pool_scores: Tensor
    streamed: bool = False


def reference_views(image: Image.Image, step: float = 30,
                    offset: float = 0.0) -> list[Image.Image]:
    """The image and its rotations every ``step`` degrees (same size, reflect-padded).

    With ``offset`` the rotations start there (``offset``, ``offset + step``, ...); the
    first item is always the image itself. Half-step offsets give poses between the views,
    which calibration scores as unseen normal poses.

    Measured with DINOv2-S taps 3/5/7 on drawn parts in random pose (``agpt data synth``,
    bracket and gear, 1 shot): image AUROC 0.79 / 0.68 with the earlier 90-degree rotations
    and mirror images, 0.83 / 0.76 with 30-degree steps, 0.67 / 0.55 without views.
    """
    array = np.asarray(image.convert("RGB"))
    return [image, *(Image.fromarray(turned)
                     for turned in _rotations(array, step, offset, mode="reflect"))]


def view_validity(image: Image.Image, step: float, offset: float, size: int) -> Tensor:
    """[V, size, size] bool: which pixels of each rotated view show the image, not its padding.

    The views of :func:`reference_views` after the first, in its order, resized to the
    model's input size. The corners a rotation fills from the reflect padding meet the image
    along mirror seams that no camera sees; calibration leaves them out
    (`calibration.valid_max`).
    """
    width, height = image.size
    ones = np.full((height, width), 255, dtype=np.uint8)
    masks = [Image.fromarray(turned).resize((size, size), Image.Resampling.NEAREST)
             for turned in _rotations(ones, step, offset, mode="constant")]
    return torch.from_numpy(np.stack([np.asarray(mask) > 127 for mask in masks]))


def half_masks(image: Image.Image, step: float, views: int, size: int) -> list[Tensor]:
    """For each half of the image (right, left, bottom, top), where it lies in each view.

    Returns:
        Four [views, size, size] bool tensors: the half's pixels in the image itself and in
        its rotated views (:func:`reference_views`' order), resized to the input size.
    """
    width, height = image.size
    halves = []
    for axis, first in ((1, False), (1, True), (0, False), (0, True)):
        half = np.zeros((height, width), dtype=np.uint8)
        cut = (width if axis == 1 else height) // 2
        index = (slice(None), slice(None, cut) if first else slice(cut, None))
        half[index if axis == 1 else index[::-1]] = 255
        turned = _rotations(half, step, 0.0, mode="constant")[: views - 1] if views > 1 else []
        masks = [Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST)
                 for mask in (half, *turned)]
        halves.append(torch.from_numpy(np.stack([np.asarray(mask) > 127 for mask in masks])))
    return halves


def _rotations(array: np.ndarray, step: float, offset: float, *,
               mode: Literal["reflect", "constant"]) -> list[np.ndarray]:
    """``array`` (H, W[, 3]) rotated to ``offset`` (or ``step``) + multiples of ``step``.

    Padded first (``mode``: reflect for views, zeros for validity masks) so the turned
    picture fills the frame; cropped back to the original size.
    """
    height, width = array.shape[:2]
    pad = int(np.ceil((np.hypot(height, width) - min(height, width)) / 2)) + 1
    widths = ((pad, pad), (pad, pad)) + (((0, 0),) if array.ndim == 3 else ())
    padded = Image.fromarray(np.pad(array, widths, mode=mode))
    resample = (Image.Resampling.BILINEAR if mode == "reflect"
                else Image.Resampling.NEAREST)
    return [np.asarray(padded.rotate(float(angle), resample=resample)
                       .crop((pad, pad, pad + width, pad + height)))
            for angle in np.arange(offset if offset else step, 360.0, step)]


# The silhouette check's threshold: the highest normal score the pool shows (leave-one-out,
# rotated copies), never below half a blob of disagreement (`pose.blob_map`: about 28 px² of
# missing or added material at 224 px). Normal parts mostly score 0 after the blob map's
# opening, with rare outliers, so a log-normal prediction bound has nothing to fit: on
# `agpt data synth` --seed 1 (bracket, 4 references: 51 scores near 0 and a few up to 0.29)
# it put the threshold at 0.99, out of reach of most defects. Measured at 1 reference, the
# normal test parts' maxima were 0.06 / 0.28 (bracket, 90th percentile / maximum) and
# 0.00 / 0.70 (gear: one of 60 above 0.5, a key slot aligned a tooth off), seed 0.
SILHOUETTE_FLOOR = 0.5
# Normal silhouette scores are floored here for the tail probabilities (zeros have no log).
SILHOUETTE_RESOLUTION = 0.05


def silhouette_calibration(scores: np.ndarray, rate: float) -> Calibration:
    """The silhouette check's threshold (see ``SILHOUETTE_FLOOR``) and its normal scores."""
    floored = np.maximum(np.asarray(scores, dtype=np.float64), SILHOUETTE_RESOLUTION)
    if floored.size < 2:  # one reference without a whole copy: the floor alone
        floored = np.full(2, SILHOUETTE_RESOLUTION)
    return Calibration(threshold=float(max(SILHOUETTE_FLOOR, floored.max())),
                       normal_scores=tuple(float(v) for v in floored),
                       method="silhouettes", false_alarm_rate=rate)


def _calibrate(loo: np.ndarray, groups: dict[str, np.ndarray], rate: float,
               references: int) -> Calibration:
    """The threshold of the local part: the highest over the copy groups.

    Each group of copies models one nuisance the pool cannot show (a displaced camera:
    shifts; another region of a surface (not for pools of parts): halves, `_region_scores`;
    a part in another pose, where the pool shows poses: rotations, `_shows_poses`), at every
    pool size: references taken in one session share them, so leave-one-out among them
    cannot see them (`calibration`). Each copy's maximum leaves out what its seams reach
    (wrapped strips, mirrored corners: `calibration.valid_max`); with them, on the textile
    demo pool, the shifted copies' bound was 0.37 instead of 0.28 and the 45-degree copies'
    0.86. The threshold has to hold for each, so it is the highest of the groups' prediction bounds
    (each computed with the leave-one-out scores). Pooling the groups instead would let the
    easy one (rotated copies of a texture match its rotated views closely) pull the bound
    down: measured on ``agpt data synth`` at 1 shot, pooled copies gave 28 % false alarms on
    grass.
    """
    if not groups:
        return threshold_from_normal_scores(loo, false_alarm_rate=rate, method="leave-one-out")
    candidates = []
    for name, scores in groups.items():
        label = ({"shifts": "shifted-self", "rotations": "rotated-self"}.get(name, name)
                 if references == 1 else f"leave-one-out+{name}")
        candidates.append(threshold_from_normal_scores(
            np.concatenate([loo, scores]), false_alarm_rate=rate, method=label))
    return max(candidates, key=lambda calibration: calibration.threshold)


class FewShotDetector:
    """AnomalyGPT's few-shot path on any patch-feature backbone."""

    # No LLM: the verdict is score > 1 (the map against its calibrated threshold).
    verdict_source: Literal["calibrated-threshold"] = "calibrated-threshold"

    def __init__(self, extractor: PatchExtractor, config: FewShotConfig, *,
                 device: str | torch.device = "cpu") -> None:
        self.extractor = extractor
        self.config = config
        self.device = torch.device(device)
        self._products: dict[str, ProductMemory] = {}
        self._streams: dict[str, StreamWindow] = {}
        # Per product: the last judged batch's global part (its distances streamed or not, and
        # the bound they were held to; for the evidence).
        self._last_global: dict[str, GlobalPart] = {}

    # -- features -------------------------------------------------------------------------
    def pixels(self, images: Sequence[Image.Image]) -> Tensor:
        """Preprocess PIL images to the backbone's input ([B, 3, S, S])."""
        cfg = self.config
        return to_tensor(images, size=cfg.image_size, mean=cfg.mean, std=cfg.std)

    @torch.inference_mode()
    def features(self, pixels: Tensor) -> list[Tensor]:
        """Per-tap patch features [B, N, C] (float32) of preprocessed pixels."""
        pixels = pixels.to(self.device)
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if self.config.bf16
            else contextlib.nullcontext()
        )
        with autocast:
            taps = self.extractor(pixels)
        return [t.float() for t in taps]

    # -- references -----------------------------------------------------------------------
    def set_references(self, product: str, images: Sequence[Image.Image], *,
                       version: int = 0) -> ProductMemory:
        """Store the normal references of ``product`` and calibrate its threshold.

        Args:
            product: Product name.
            images: k >= 1 normal images.
            version: Pool version the references come from (for live refresh).

        Returns:
            The product's memory with its calibration.
        """
        if not images:
            msg = f"product {product!r} needs at least one normal reference image"
            raise ValueError(msg)
        cfg = self.config
        pixels = self.pixels(images)
        taps = self.features(pixels)
        views = len(reference_views(images[0], cfg.rotation_step)) if cfg.augment_references else 1
        memory_taps = taps
        if views > 1:
            augmented = [view for image in images
                         for view in reference_views(image, cfg.rotation_step)]
            memory_taps = self.features(self.pixels(augmented))
        memory = build_memory(memory_taps)
        per_row = memory_taps[0].shape[1] * views  # rows of one reference (all its views)
        owners_all = torch.arange(len(images)).repeat_interleave(per_row)
        owners = []
        if self.config.max_memory_patches is not None:
            kept = [coreset_indices(bank, self.config.max_memory_patches) for bank in memory]
            memory = [bank[index] for bank, index in zip(memory, kept, strict=True)]
            owners = [owners_all[index] for index in kept]
        else:
            owners = [owners_all for _ in memory]
        loo, groups = self._normal_scores(pixels, taps, memory, owners)
        grey = grey_levels(pixels, cfg.mean, cfg.std) if cfg.silhouette_check else None
        silhouettes = pool_silhouettes(grey) if grey is not None else None
        if silhouettes is None:  # a surface: its next parts show regions the pool has not
            groups["regions"] = self._region_scores(pixels, images, memory_taps)
        use_global = self.config.global_check and len(images) > 2
        part_rate = self.config.false_alarm_rate / (1 + use_global + (silhouettes is not None))
        calibration = _calibrate(loo, groups, part_rate, len(images))
        if views > 1 and self._shows_poses(taps, calibration.threshold):
            groups["rotations"] = self._posed_scores(images, memory, owners)
            calibration = _calibrate(loo, groups, part_rate, len(images))
        entry = ProductMemory(product, memory, owners, len(images), calibration, version)
        if silhouettes is not None and grey is not None:
            copied = copied_whole(silhouettes, copied_references(len(images), every_size=True))
            scores = silhouette_normal_scores(
                silhouettes, rotated_copies(grey[copied], cfg.rotation_step), copied)
            entry.silhouettes = silhouettes
            entry.silhouette_calibration = silhouette_calibration(scores, part_rate)
        if use_global:
            descriptors = image_descriptors(taps)
            similarity = descriptors @ descriptors.T
            similarity.fill_diagonal_(-1.0)
            global_loo = 1.0 - similarity.amax(dim=1)
            entry.descriptors = descriptors
            entry.global_calibration = threshold_from_normal_scores(
                global_loo.numpy(), false_alarm_rate=part_rate, method="leave-one-out",
            )
        self._products[product] = entry
        if cfg.stream_window > 0:  # frames judged against the old pool do not carry over
            self._streams[product] = StreamWindow(
                cfg.stream_window, fraction=cfg.stream_fraction,
                global_min_frames=cfg.stream_global_frames)
        return entry

    def _against_others(self, memory: list[Tensor], owners: list[Tensor]) -> MapAgainstOthers:
        """Maps of query taps against ``memory`` without the rows of one reference."""
        cfg = self.config
        size = (cfg.image_size, cfg.image_size)

        def map_against_others(query: list[Tensor], left_out: int | None) -> Tensor:
            exclude = None if left_out is None else [o == left_out for o in owners]
            return memory_map(query, memory, grid=cfg.grid, out_size=size, sigma=cfg.sigma,
                              exclude=exclude)

        return map_against_others

    def _normal_scores(self, pixels: Tensor, taps: list[Tensor], memory: list[Tensor],
                       owners: list[Tensor]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Map maxima that normal parts reach (`calibration.normal_score_groups`)."""
        cfg = self.config
        return normal_score_groups(pixels, taps, encode=self.features,
                                   map_against_others=self._against_others(memory, owners),
                                   patch_size=cfg.patch_size, every_size=True,
                                   sigma=cfg.sigma)

    def _shows_poses(self, taps: list[Tensor], threshold: float) -> bool:
        """Whether the pool shows parts in poses its unrotated references cannot explain.

        Each reference is scored against the other references' own (unrotated) patches; if
        one scores above ``threshold`` (the local threshold without pose copies), the pool
        holds parts in different poses and poses between the memory's rotated views will
        come: calibration then scores the half-step rotated copies (`_posed_scores`). If
        every reference stays under it, the parts come in one pose (or their surface looks
        alike in any pose) and rotated copies would model poses the line does not show:
        measured on the textile demo (448 px, 6 references, 90-degree views), the 45-degree
        copies of its woven surface set the threshold at 0.40 where leave-one-out and
        shifts gave 0.28, and 4 of the demo's 5 local defects (0.35-0.43) fell under it.
        A single reference shows no pose: the copies are scored (the cautious choice).
        """
        count = len(taps[0])
        if count == 1:
            return True
        plain = build_memory(taps)
        owners = torch.arange(count).repeat_interleave(taps[0].shape[1])
        map_against_others = self._against_others(plain, [owners for _ in plain])
        return any(float(map_against_others([t[i : i + 1] for t in taps], i).max()) > threshold
                   for i in range(count))

    def _region_scores(self, pixels: Tensor, images: Sequence[Image.Image],
                       memory_taps: list[Tensor]) -> np.ndarray:
        """Map maxima of each half of the copied references against its other half.

        Each half of a reference (as it is and in its eight quarter-patch shifts) is scored
        against the patches of the other half of the same reference, in all its views: a
        region of the surface that reference has not seen, by a slightly displaced camera,
        as the next parts show it. References taken in one session (one band of a web, one
        area of a sheet) share their region, so neither leave-one-out nor whole-image copies
        nor halves scored against the other references show another one. Measured on ``agpt
        data synth`` (brick, whose test crops come from another band of the photo than its
        references): with seam-free shifted copies alone, 23 % / 15 % of the normal test
        images were flagged at 1 / 4 references, and 10 % of a held-out band at 4 references
        with halves scored against the other references too; at 1 reference the halves
        scored 0.28-0.34, the normal test images 0.30 on average (at most 0.37), the
        shifted copies 0.21. The cost: a threshold that does not fall below this level with
        more references, so recall does not grow with them on such surfaces.
        """
        cfg = self.config
        size = cfg.image_size
        copied = copied_references(len(images), every_size=True)
        per = memory_taps[0].shape[0] // len(images)  # views of one reference
        reach = seam_reach(cfg.patch_size, cfg.sigma)
        shifted = torch.cat([torch.cat([pixels[i : i + 1],
                                        quarter_patch_shifts(pixels[i : i + 1], cfg.patch_size)])
                             for i in range(copied)])
        encoded = self.features(shifted)  # per tap [R * 9, N, C]
        unwrapped = torch.cat([torch.ones(1, size, size, dtype=torch.bool),
                               shift_validity(size, size, cfg.patch_size)])  # [9, S, S]
        scores: list[float] = []
        for i in range(copied):
            own = [t[per * i : per * (i + 1)] for t in memory_taps]  # per tap [V, N, C]
            query = [t[9 * i : 9 * (i + 1)] for t in encoded]
            for kept in half_masks(images[i], cfg.rotation_step, per, size):  # [V, S, S]
                # Patches lying wholly in the kept half, in every view.
                inside = F.avg_pool2d(kept.float().unsqueeze(1), cfg.patch_size).flatten(1) >= 1
                bank = [F.normalize(t[inside], dim=-1) for t in own]
                maps = memory_map(query, bank, grid=cfg.grid, out_size=(size, size),
                                  sigma=cfg.sigma)
                scores.extend(valid_max(maps, ~kept[:1] & unwrapped, reach).tolist())
        return np.asarray(scores)

    def _posed_scores(self, images: Sequence[Image.Image], memory: list[Tensor],
                      owners: list[Tensor]) -> np.ndarray:
        """Map maxima of the copied references turned half a step between the memory's views.

        Scored against the other references' rows (`calibration.copy_scores`); the mirrored
        corners of each turned copy are left out (`view_validity`).
        """
        cfg = self.config
        copied = images[:copied_references(len(images), every_size=True)]
        half = cfg.rotation_step / 2
        posed = self.pixels([view for image in copied
                             for view in reference_views(image, cfg.rotation_step,
                                                         offset=half)[1:]])
        valid = torch.cat([view_validity(image, cfg.rotation_step, half, cfg.image_size)
                           for image in copied])
        return copy_scores(posed, valid, copied=len(copied), references=len(images),
                           encode=self.features,
                           map_against_others=self._against_others(memory, owners),
                           reach=seam_reach(cfg.patch_size, cfg.sigma))

    def product(self, product: str) -> ProductMemory | None:
        """The product's memory, or None when it has no references."""
        return self._products.get(product)

    def products(self) -> list[str]:
        """Products that have references."""
        return sorted(self._products)

    # -- detection ------------------------------------------------------------------------
    def anomaly_maps(self, pixels: Tensor, memory: ProductMemory) -> Tensor:
        """[B, S, S] anomaly maps of preprocessed pixels against a product's memory."""
        return self._maps_and_global(pixels, memory)[0]

    def score_maps(self, maps: Tensor, memory: ProductMemory) -> Tensor:
        """Maps [B, S, S] (`anomaly_maps`, `image_scores`) in the image score's units.

        Each pixel's tail probability under the product's map calibration as
        ``log p / log α`` (`calibration.score_units`): 1.0 at the threshold, and a normal
        part's level is a probability, the same on every product. The CPU LLM reads this.
        """
        units = score_units(memory.calibration, maps.detach().cpu().numpy())
        return torch.from_numpy(units).to(maps.device, torch.float32)

    def stream(self, product: str) -> StreamWindow | None:
        """The product's stream window (None with the stream off or no references)."""
        return self._streams.get(product)

    def _maps_and_global(self, pixels: Tensor, memory: ProductMemory,
                         ) -> tuple[Tensor, GlobalPart | None, list[Tensor]]:
        """Maps, the global part and the taps (to push into the stream once judged)."""
        cfg = self.config
        taps = self.features(pixels)
        stream = self._streams.get(memory.product)
        mutual = stream.distances(taps) if stream is not None else None
        size = (cfg.image_size, cfg.image_size)
        if mutual is None:
            maps = memory_map(taps, memory.memory, grid=cfg.grid, out_size=size,
                              sigma=cfg.sigma)
        else:  # the stream can only lower a distance (see the module doc)
            maps = memory_map(taps, memory.memory, grid=cfg.grid, out_size=size, sigma=0.0)
            coarse = mutual.view(-1, 1, *cfg.grid)
            fine = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear",
                                                   align_corners=False).squeeze(1)
            maps = gaussian_blur(combine_with_pool(maps, fine, cfg.stream_weight), cfg.sigma)
        if memory.descriptors is None or memory.global_calibration is None:
            return maps, None, taps
        descriptors = image_descriptors(taps)
        pool_scores = 1.0 - (descriptors @ memory.descriptors.T).amax(dim=1)
        part = GlobalPart(pool_scores, memory.global_calibration, descriptors, pool_scores)
        if stream is not None and cfg.stream_global:
            recent = stream.global_distances(descriptors)
            bound = stream.global_calibration(
                false_alarm_rate=memory.global_calibration.false_alarm_rate,
                weight=cfg.stream_weight)
            if recent is not None and bound is not None:  # as for patches, with its own bound
                if bound.threshold >= memory.global_calibration.threshold:
                    bound = memory.global_calibration  # the tighter of the two (class doc)
                part = GlobalPart(combine_with_pool(pool_scores, recent, cfg.stream_weight),
                                  bound, descriptors, pool_scores, streamed=True)
        return maps, part, taps

    def _judge(self, pixels: Tensor,
               memory: ProductMemory) -> tuple[np.ndarray, Tensor, GlobalPart | None]:
        """Scores, maps and the global part; frames judged normal join the stream window.

        Only frames whose score stays at or below the threshold enter the window: a defect
        the pool flags never becomes part of the "recent normal variety", so the same defect
        on the next parts is still compared with clean frames (flagged every time), while
        frames the pool missed were missed anyway.
        """
        maps, part, taps = self._maps_and_global(pixels, memory)
        if part is not None:
            self._last_global[memory.product] = part
        local = maps.flatten(1).amax(1).numpy()
        if memory.silhouettes is not None and memory.silhouette_calibration is not None:
            cfg = self.config
            outline = torch.from_numpy(query_maps(grey_levels(pixels, cfg.mean, cfg.std),
                                                  memory.silhouettes))
            scores = self._combine(memory, local, part, outline.flatten(1).amax(1).numpy())
            # The map shows the silhouette check in the patch map's units: above the local
            # threshold exactly where the check is above its own.
            units = memory.calibration.threshold / memory.silhouette_calibration.threshold
            maps = torch.maximum(maps, outline.to(maps.dtype) * units)
        else:
            scores = self._combine(memory, local, part)
        stream = self._streams.get(memory.product)
        if stream is not None:
            keep = (scores <= 1.0).tolist()
            if part is not None and self.config.stream_global:
                stream.push(taps, keep, descriptors=part.descriptors,
                            pool_global=part.pool_scores)
            else:
                stream.push(taps, keep)
        return scores, maps, part

    def image_scores(self, pixels: Tensor, memory: ProductMemory) -> tuple[Tensor, Tensor]:
        """Calibrated image scores [B] (1.0 = threshold) and maps [B, S, S] (for evaluation)."""
        scores, maps, _ = self._judge(pixels, memory)
        return torch.from_numpy(scores).float(), maps

    def _combine(self, memory: ProductMemory, local: np.ndarray,
                 part: GlobalPart | None,
                 outline: np.ndarray | None = None) -> np.ndarray:
        """Local, global and silhouette raw scores -> one calibrated score (module doc)."""
        parts = [tail_probability(memory.calibration, local)]
        if outline is not None and memory.silhouette_calibration is not None:
            # Everywhere, unlike the global part: counted only above its threshold (as the
            # global part is), gear fell from 0.991 to 0.936 image AUROC at 1 shot on
            # `agpt data synth` (dents and pieces under half a blob then ranked as normal).
            parts.append(tail_probability(memory.silhouette_calibration, outline))
        if part is not None:
            # The global part counts only where it is significant at its own level α / m:
            # below that, an image descriptor's distance is ordinary normal variation, not
            # evidence, and ranking by it scrambles the local ranking. Measured on
            # `agpt data synth` (4 and 8 shots): the descriptor alone ranks grass 0.34,
            # bracket 0.45, gear 0.48 (below chance) and grass fell to 0.48 image AUROC at
            # 4 shots when its tail probability took part everywhere.
            calibration = part.calibration
            p_global = tail_probability(calibration, part.scores.numpy())
            parts.append(np.where(p_global < calibration.false_alarm_rate, p_global, 1.0))
        return combined_units(parts, self.config.false_alarm_rate)

    def assess(self, product: str, pixels: Tensor) -> Assessment:
        """Image scores, maps and verdicts (score > 1) of preprocessed pixels.

        Raises:
            KeyError: when ``product`` has no references.
        """
        scores, maps = self.image_scores(pixels, self._products[product])
        return Assessment(scores, maps, scores > 1.0, None)

    def evidence(self, product: str, detection: Detection) -> dict[str, object]:
        """The raw scores and calibrated thresholds behind a detection (for the audit trail)."""
        memory = self._products[product]
        evidence: dict[str, object] = {
            "local_score": detection.local_score,
            "local_threshold": memory.calibration.threshold,
            "calibration": memory.calibration.method,
            "references": memory.references,
            "pool_version": memory.version,
        }
        if memory.global_calibration is not None:
            last = self._last_global.get(product)
            evidence["global_score"] = detection.global_score
            evidence["global_threshold"] = (last.calibration if last is not None
                                            else memory.global_calibration).threshold
            # Until the stream window is ready (restart, pool change) the image-level
            # distance and its bound rest on the references alone, whose leave-one-out bound
            # cannot see the line's drift (README: false alarms of the global part): say so.
            if self.config.stream_global:
                evidence["global_bound"] = ("stream" if last is not None and last.streamed
                                            else "references")
        # With fewer than MIN_LEAVE_ONE_OUT references the threshold rests on shifted copies
        # of the references, not on other normal parts: its false-alarm rate is an estimate
        # the pool cannot check (the dashboard shows this flag).
        evidence["false_alarm_rate"] = self.config.false_alarm_rate
        evidence["false_alarm_rate_checked"] = memory.references >= MIN_LEAVE_ONE_OUT
        stream = self._streams.get(product)
        if stream is not None:
            evidence["stream_frames"] = len(stream)
        return evidence

    def detect(self, product: str, images: Sequence[Image.Image]) -> list[Detection]:
        """Verdicts for images of one product.

        Raises:
            KeyError: when ``product`` has no references.
        """
        memory = self._products.get(product)
        if memory is None:
            msg = f"no normal references for product {product!r}"
            raise KeyError(msg)
        scores, maps_t, part = self._judge(self.pixels(images), memory)
        maps = maps_t.numpy()
        local_threshold = memory.calibration.threshold
        results = []
        for index, amap in enumerate(maps):
            local = float(amap.max())
            score = float(scores[index])
            global_score = None
            if part is not None:
                global_score = float(part.scores[index])
            mask = amap > local_threshold
            anomalous = score > 1.0
            regions = region_positions(mask, min_area=self.config.min_region_area)
            if mask.any() and not regions:  # only tiny regions: report the peak's cell
                regions = region_positions(amap >= local)
            positions = distinct(regions)
            results.append(Detection(
                score=score, anomalous=anomalous, threshold=1.0,
                anomaly_map=amap.astype(np.float32), mask=mask, positions=positions,
                text=answer_text(anomalous, positions, len(regions)),
                local_score=local, global_score=global_score,
            ))
        return results
