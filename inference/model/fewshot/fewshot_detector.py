"""The few-shot detector: patch features → anomaly map → calibrated verdict, mask, answer.

Composes a patch-feature extractor (any module mapping normalised pixels to a list of
per-tap patch features) with AnomalyGPT's few-shot map, a per-product threshold calibrated
on the pool's normal images, and AnomalyGPT's answer wording.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..interface import Assessment, Detection
from ..positions import answer_text, distinct, region_positions
from ..preprocess import to_tensor
from .calibration import (
    Calibration,
    calibration_method,
    small_pool_normal_scores,
    threshold_from_normal_scores,
)
from .memory import (
    build_memory,
    coreset_indices,
    image_descriptors,
    memory_map,
)

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
        augment_references: Add rotated (90/180/270) and flipped views of every reference to
            the memory: more normal patches for very few shots, for parts or surfaces whose
            local appearance does not depend on orientation.
        max_memory_patches: Cap on memory rows per tap; larger pools are reduced to a greedy
            k-center coreset, which bounds the matching cost per frame (None = no cap).
        bf16: Run the backbone under bf16 autocast (faster only where the CPU has AMX or on
            GPUs; slower than fp32 on AVX-512-only CPUs).
        model_id: Recorded with every verdict.
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


def reference_views(image: Image.Image) -> list[Image.Image]:
    """The image, its 90/180/270-degree rotations and its two mirror images."""
    transpose = Image.Transpose
    return [image] + [image.transpose(t) for t in (
        transpose.ROTATE_90, transpose.ROTATE_180, transpose.ROTATE_270,
        transpose.FLIP_LEFT_RIGHT, transpose.FLIP_TOP_BOTTOM)]


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
        pixels = self.pixels(images)
        taps = self.features(pixels)
        views = len(reference_views(images[0])) if self.config.augment_references else 1
        memory_taps = taps
        if views > 1:
            augmented = [view for image in images for view in reference_views(image)]
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
        scores = self._normal_scores(pixels, taps, memory, owners)
        calibration = threshold_from_normal_scores(
            scores, false_alarm_rate=self.config.false_alarm_rate,
            method=calibration_method(len(images)),
        )
        entry = ProductMemory(product, memory, owners, len(images), calibration, version)
        if self.config.global_check and len(images) > 2:
            descriptors = image_descriptors(taps)
            similarity = descriptors @ descriptors.T
            similarity.fill_diagonal_(-1.0)
            loo = 1.0 - similarity.amax(dim=1)
            entry.descriptors = descriptors
            entry.global_calibration = threshold_from_normal_scores(
                loo.numpy(), false_alarm_rate=self.config.false_alarm_rate,
                method="leave-one-out",
            )
        self._products[product] = entry
        return entry

    def _normal_scores(self, pixels: Tensor, taps: list[Tensor], memory: list[Tensor],
                       owners: list[Tensor]) -> np.ndarray:
        """Map maxima that normal parts reach (`calibration.small_pool_normal_scores`)."""
        cfg = self.config
        size = (cfg.image_size, cfg.image_size)

        def map_against_others(query: list[Tensor], left_out: int | None) -> Tensor:
            exclude = None if left_out is None else [o == left_out for o in owners]
            return memory_map(query, memory, grid=cfg.grid, out_size=size, sigma=cfg.sigma,
                              exclude=exclude)

        return small_pool_normal_scores(pixels, taps, encode=self.features,
                                        map_against_others=map_against_others,
                                        patch_size=cfg.patch_size)

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

    def _maps_and_global(self, pixels: Tensor,
                         memory: ProductMemory) -> tuple[Tensor, Tensor | None]:
        cfg = self.config
        taps = self.features(pixels)
        maps = memory_map(taps, memory.memory, grid=cfg.grid,
                            out_size=(cfg.image_size, cfg.image_size), sigma=cfg.sigma)
        global_scores = None
        if memory.descriptors is not None:
            similarity = image_descriptors(taps) @ memory.descriptors.T
            global_scores = 1.0 - similarity.amax(dim=1)
        return maps, global_scores

    def image_scores(self, pixels: Tensor, memory: ProductMemory) -> tuple[Tensor, Tensor]:
        """Threshold-normalised image scores [B] and maps [B, S, S] (for evaluation)."""
        maps, global_scores = self._maps_and_global(pixels, memory)
        scores = maps.flatten(1).amax(1) / memory.calibration.threshold
        if global_scores is not None and memory.global_calibration is not None:
            scores = torch.maximum(scores, global_scores / memory.global_calibration.threshold)
        return scores, maps

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
            evidence["global_score"] = detection.global_score
            evidence["global_threshold"] = memory.global_calibration.threshold
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
        maps_t, global_t = self._maps_and_global(self.pixels(images), memory)
        maps = maps_t.numpy()
        local_threshold = memory.calibration.threshold
        results = []
        for index, amap in enumerate(maps):
            local = float(amap.max())
            score = local / local_threshold
            global_score = None
            if global_t is not None and memory.global_calibration is not None:
                global_score = float(global_t[index])
                score = max(score, global_score / memory.global_calibration.threshold)
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
