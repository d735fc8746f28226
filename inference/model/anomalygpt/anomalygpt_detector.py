"""The released AnomalyGPT behind the service's detector interface (`interface.Detector`).

Per product the normal references are encoded once (ImageBind taps, reused by every batch),
and a map threshold is calibrated on them exactly as the few-shot detector does (leave-one-out,
plus quarter-patch shifted copies for small pools; `calibration.py`), so the stored score,
mask and fallback positions mean the same as on the CPU profiles.

The *verdict* is the LLM's: P(yes) of the first answer token from one batched prefill
(> 0.5 ⇒ anomalous). Only frames judged anomalous generate their answer sentence; the
positions are parsed from it, falling back to the map's regions when it names none. The score
is the map's maximum in units of the calibrated threshold (what image AUROC ranks); P(yes) is
kept in `Detection.probability` and in the evidence.

With an ``evidence`` detector (the CPU composition: a `FewShotDetector` on the same backbone)
the map, its calibrated threshold, the image score and the stream memory are that detector's,
exactly as the calibrated-threshold profile serves them; the LLM reads that map in units of the
threshold (1.0 = threshold on every product, so what it learned on its training images holds on
other products) and gives the verdict and the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..fewshot.calibration import (
    Calibration,
    calibration_method,
    small_pool_normal_scores,
    threshold_from_normal_scores,
)
from ..fewshot.fewshot_detector import FewShotDetector, ProductMemory
from ..interface import Assessment, Detection
from ..positions import answer_text, distinct, region_positions
from ..preprocess import to_tensor
from .conversation import Conversation
from .model import MAP_SIZE, AnomalyGPT, Explain, Verdict


@dataclass(frozen=True)
class AnomalyGPTDetectorConfig:
    """Settings of the AnomalyGPT detector.

    Attributes:
        image_size: Input and map size; the prompt learner fixes it at 224 (and so must the
            encoder's input).
        patch_size: The encoder's patch size (small-pool calibration shifts by a quarter).
        false_alarm_rate: Target rate of normal parts above the map threshold.
        min_region_area: Mask regions smaller than this (pixels) give no fallback position.
        max_new_tokens: Length limit of a generated answer.
        model_id: Recorded with every verdict.
    """

    image_size: int = MAP_SIZE
    patch_size: int = 14
    false_alarm_rate: float = 0.01
    min_region_area: int = 16
    max_new_tokens: int = 64
    model_id: str = "anomalygpt-7b"


@dataclass
class AnomalyGPTMemory:
    """One product's reference taps and calibrated map threshold."""

    product: str
    taps: list[Tensor]  # per tap [K, 1 + N, W] raw encoder taps, on the model's device
    references: int
    calibration: Calibration
    version: int = 0
    map_scale: float | None = None  # the threshold again, for calibrated prompt maps
    evidence: ProductMemory | None = None  # the evidence detector's memory, when there is one


class AnomalyGPTDetector:
    """AnomalyGPT (image encoder + decoder + prompt learner + LLM) serving several products.

    Args:
        model: The composed model (e.g. `AnomalyGPT.from_official`), on its device.
        config: Detector settings.
        evidence: A few-shot detector whose map (in units of its calibrated threshold, or of
            its image score for a "scored" model: `FewShotDetector.score_maps`) the prompt
            learner reads instead of the model's own few-shot map; for models with
            calibrated or scored prompt maps (`AnomalyGPTConfig.prompt_map`).

    The product name is the class name of the inspection question ("metal_nut" → "metal
    nut"), as AnomalyGPT was trained with MVTec/VisA class names.
    """

    verdict_source: Literal["llm"] = "llm"

    def __init__(self, model: AnomalyGPT,
                 config: AnomalyGPTDetectorConfig | None = None, *,
                 evidence: FewShotDetector | None = None) -> None:
        self.model = model.eval()
        self.config = config or AnomalyGPTDetectorConfig()
        if evidence is not None and model.config.prompt_map == "raw":
            msg = ("an evidence detector needs a model that reads calibrated prompt maps "
                   "(or scored ones)")
            raise ValueError(msg)
        if evidence is not None and evidence.config.image_size != MAP_SIZE:
            msg = f"the evidence detector must work at {MAP_SIZE} px"
            raise ValueError(msg)
        self.evidence_detector = evidence
        encoder = model.encoder
        size = encoder.image_size
        if self.config.image_size != MAP_SIZE or size != MAP_SIZE:
            msg = (f"AnomalyGPT works at {MAP_SIZE} px (its encoder at {size} px); "
                   f"got image_size={self.config.image_size}")
            raise ValueError(msg)
        if self.config.patch_size != encoder.patch_size:
            msg = f"patch_size {self.config.patch_size} != the encoder's {encoder.patch_size}"
            raise ValueError(msg)
        self._mean, self._std = tuple(encoder.mean), tuple(encoder.std)
        self._products: dict[str, AnomalyGPTMemory] = {}

    def pixels(self, images: Sequence[Image.Image]) -> Tensor:
        """[B, 3, 224, 224] of whole images, normalised with the encoder's mean/std.

        No crop: border defects stay. CLIP's mean/std for ImageBind, ImageNet's for DINOv2.
        """
        return to_tensor(images, size=self.config.image_size, mean=self._mean, std=self._std)

    # -- references -----------------------------------------------------------------------
    @torch.no_grad()
    def set_references(self, product: str, images: Sequence[Image.Image], *,
                       version: int = 0) -> AnomalyGPTMemory:
        """Encode a product's normal references once and calibrate its map threshold.

        Raises:
            ValueError: without images.
        """
        if not images:
            msg = f"product {product!r} needs at least one normal reference image"
            raise ValueError(msg)
        if self.evidence_detector is not None:
            found = self.evidence_detector.set_references(product, images, version=version)
            memory = AnomalyGPTMemory(product, [], len(images), found.calibration, version,
                                      found.calibration.threshold, found)
            self._products[product] = memory
            return memory
        pixels = self.pixels(images)
        taps = self.model.encode_references(pixels)  # per tap [K, 1 + N, W]
        scores = self._normal_scores(pixels, taps)
        calibration = threshold_from_normal_scores(
            scores, false_alarm_rate=self.config.false_alarm_rate,
            method=calibration_method(len(images)))
        # Calibrated prompt maps read the map in units of this threshold (as `score` is).
        scale = (calibration.threshold if self.model.config.prompt_map == "calibrated"
                 else None)
        memory = AnomalyGPTMemory(product, taps, len(images), calibration, version, scale)
        self._products[product] = memory
        return memory

    def _normal_scores(self, pixels: Tensor, taps: list[Tensor]) -> np.ndarray:
        """Map maxima that normal parts reach (`calibration.small_pool_normal_scores`)."""
        def map_against_others(query: list[Tensor], left_out: int | None) -> Tensor:
            others = taps if left_out is None else [
                torch.cat([t[:left_out], t[left_out + 1 :]]) for t in taps]
            return self.model.map_with_references(query, others)

        return small_pool_normal_scores(pixels, taps, encode=self.model.encode_references,
                                        map_against_others=map_against_others,
                                        patch_size=self.config.patch_size)

    def product(self, product: str) -> AnomalyGPTMemory | None:
        """The product's references, or None when it has none."""
        return self._products.get(product)

    def products(self) -> list[str]:
        """Products that have references."""
        return sorted(self._products)

    def _memory(self, product: str) -> AnomalyGPTMemory:
        memory = self._products.get(product)
        if memory is None:
            msg = f"no normal references for product {product!r}"
            raise KeyError(msg)
        return memory

    # -- detection ------------------------------------------------------------------------
    def _prompt_maps(self, memory: AnomalyGPTMemory, maps: Tensor | None) -> Tensor | None:
        """The evidence maps in score units, for a model that reads them ("scored")."""
        if (maps is None or memory.evidence is None or self.evidence_detector is None
                or self.model.config.prompt_map != "scored"):
            return None
        return self.evidence_detector.score_maps(maps, memory.evidence)

    def _verdicts(self, memory: AnomalyGPTMemory, pixels: Tensor, *, explain: Explain,
                  judge: bool = True) -> tuple[list[Verdict], list[float]]:
        """The LLM's verdicts and the image scores (1.0 = threshold) of a batch.

        With an evidence detector its maps and scores are used (`judge`: as it judges a
        frame, feeding its stream memory; else the plain map, for dialogue).
        """
        threshold = memory.calibration.threshold
        maps = None
        scores: list[float] | None = None
        if memory.evidence is not None and self.evidence_detector is not None:
            if judge:
                found, maps = self.evidence_detector.image_scores(pixels, memory.evidence)
                scores = found.tolist()
            else:
                maps = self.evidence_detector.anomaly_maps(pixels, memory.evidence)
        verdicts = self.model.verdicts(pixels, memory.product, memory.taps or None,
                                       explain=explain,
                                       max_new_tokens=self.config.max_new_tokens,
                                       map_scale=memory.map_scale, maps=maps,
                                       prompt_maps=self._prompt_maps(memory, maps))
        if scores is None:
            scores = [v.score / threshold for v in verdicts]
        return verdicts, scores

    def assess(self, product: str, pixels: Tensor) -> Assessment:
        """Map scores (threshold units), maps and LLM verdicts, generating no text."""
        memory = self._memory(product)
        verdicts, scores = self._verdicts(memory, pixels, explain="none")
        return Assessment(
            scores=torch.tensor(scores),
            maps=torch.stack([v.anomaly_map for v in verdicts]),
            anomalous=torch.tensor([v.anomalous for v in verdicts]),
            probability=torch.tensor([v.probability for v in verdicts]),
        )

    def detect(self, product: str, images: Sequence[Image.Image]) -> list[Detection]:
        """Verdicts for images of one product; only "Yes" frames generate their answer.

        Raises:
            KeyError: when ``product`` has no references.
        """
        memory = self._memory(product)
        verdicts, scores = self._verdicts(memory, self.pixels(images), explain="anomalous")
        threshold = memory.calibration.threshold
        results = []
        for verdict, score in zip(verdicts, scores, strict=True):
            amap = verdict.anomaly_map.numpy().astype(np.float32)
            local = float(amap.max())
            mask = amap > threshold
            positions = list(verdict.positions)
            if verdict.anomalous and not positions:  # the answer names no place: the map's
                regions = region_positions(mask, min_area=self.config.min_region_area)
                positions = distinct(regions or region_positions(amap >= local))
            results.append(Detection(
                score=score, anomalous=verdict.anomalous, threshold=1.0,
                anomaly_map=amap, mask=mask, positions=positions,
                text=verdict.text or answer_text(verdict.anomalous, positions),
                local_score=local, probability=verdict.probability,
            ))
        return results

    def evidence(self, product: str, detection: Detection) -> dict[str, object]:
        """P(yes), the map score and the calibrated map threshold behind a detection."""
        memory = self._memory(product)
        return {
            "verdict_source": self.verdict_source,
            "p_yes": detection.probability,
            "map_score": detection.score,
            "map_anomalous": detection.score > 1.0,
            "local_score": detection.local_score,
            "local_threshold": memory.calibration.threshold,
            "calibration": memory.calibration.method,
            "references": memory.references,
            "pool_version": memory.version,
        }

    # -- dialogue -------------------------------------------------------------------------
    def chat(self, product: str, image: Image.Image, conversation: Conversation, *,
             max_new_tokens: int = 256, streamer: Any = None) -> str:
        """Answers the dialogue's pending question about ``image``.

        The few-shot map of the product's references is spliced in, the answer recorded in
        ``conversation``; ``streamer`` (a transformers streamer) receives the tokens as they
        are generated.
        """
        memory = self._memory(product)
        pixels = self.pixels([image])
        maps = None
        if memory.evidence is not None and self.evidence_detector is not None:
            maps = self.evidence_detector.anomaly_maps(pixels, memory.evidence)
        return self.model.chat(conversation, pixels, class_name=product,
                               references=memory.taps or None, max_new_tokens=max_new_tokens,
                               streamer=streamer, map_scale=memory.map_scale, maps=maps,
                               prompt_maps=self._prompt_maps(memory, maps))
