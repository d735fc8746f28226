"""The map a served CPU LLM reads, computed for training samples exactly as it is served.

The CPU composition's detector (`AnomalyGPTDetector` with an ``evidence`` few-shot detector)
feeds the prompt learner the few-shot detector's map divided by the product's calibrated
threshold: 1.0 is the threshold on every product. Training computes the same thing with the
same detector (the profile's `build_detector`, stream memory off): each sample's pool
(`SampleSource.pool`) is set as the references of a product, calibrated as the detector
calibrates any product, and the sample's image is mapped against it. So a training image and a
frame of a product never trained on are on one scale, and the LLM has to learn only where the
map is above about 1 and how strongly, and where that is (the 3×3 grid words).

Pools are calibrated once each and kept (a product memory is 10–20 MB per pool).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch import Tensor

from inference.model.fewshot.fewshot_detector import FewShotDetector

from .datasets import Pool
from .samples import Sample

__all__ = ["FewShotEvidence"]


class FewShotEvidence:
    """Calibrated few-shot maps of training samples.

    Args:
        detector: The served profile's few-shot detector (stream memory off).
        pools: The pool of a sample's `pool` key (`SampleSource.pool`).
        scored: Give the maps in the image score's units (`FewShotDetector.score_maps`), as
            the detector feeds a "scored" model (`AnomalyGPTConfig.prompt_map`).
    """

    def __init__(self, detector: FewShotDetector, pools: Callable[[str], Pool], *,
                 scored: bool = False) -> None:
        if detector.config.stream_window:
            msg = "the evidence detector must run without stream memory (training order)"
            raise ValueError(msg)
        self.detector = detector
        self.pools = pools
        self.scored = scored

    @torch.no_grad()
    def __call__(self, samples: Sequence[Sample]) -> tuple[Tensor, Tensor]:
        """Maps [B, 224, 224] and their pools' calibrated thresholds [B] (float32).

        `AnomalyGPT.prompt_map` divides one by the other, as it does when serving; `scored`
        maps are already in score units (their threshold is 1.0 as well).

        Raises:
            ValueError: a sample without a pool.
        """
        maps, scales = [], []
        for sample in samples:
            if not sample.pool:
                msg = "evidence maps need pooled samples (SampleSource(shots=...))"
                raise ValueError(msg)
            memory = self.detector.product(sample.pool)
            if memory is None:
                references = [Image.fromarray(r) for r in self.pools(sample.pool).references]
                memory = self.detector.set_references(sample.pool, references)
            pixels = self.detector.pixels([Image.fromarray(sample.image)])
            amap = self.detector.anomaly_maps(pixels, memory)
            maps.append((self.detector.score_maps(amap, memory) if self.scored else amap)[0])
            scales.append(memory.calibration.threshold)
        return torch.stack(maps).float(), torch.tensor(scales, dtype=torch.float32)
