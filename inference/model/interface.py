"""What the service needs of a detector: the worker, pool, evaluation and chat depend on this.

The result types (`Detection`, `Assessment`) and the `Detector` protocol live here, above both
implementations: `fewshot.fewshot_detector.FewShotDetector` (the CPU profiles; the verdict is
the map score against a calibrated threshold) and `anomalygpt.anomalygpt_detector.
AnomalyGPTDetector` (the released model; the verdict is the LLM's yes/no from one prefill).
Nothing here runs a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, Protocol

import numpy as np
from PIL import Image
from torch import Tensor

from .fewshot.calibration import Calibration

__all__ = ["Assessment", "Detection", "Detector", "DetectorSettings", "ReferenceState",
           "VerdictSource"]

VerdictSource = Literal["llm", "calibrated-threshold"]


class Detection(NamedTuple):
    """One verdict; maps and masks are at ``image_size`` resolution.

    ``score`` is on the calibrated scale of the detector: ``threshold`` is 1.0 and
    ``score > 1`` means anomalous (few-shot detector: the local and global parts combined as
    tail probabilities, ``log(p) / log(α)``; see ``fewshot.fewshot_detector``).
    """

    score: float
    anomalous: bool
    threshold: float
    anomaly_map: np.ndarray  # float32 [S, S]
    mask: np.ndarray  # bool [S, S]
    positions: list[str]
    text: str
    local_score: float = 0.0
    global_score: float | None = None
    probability: float | None = None  # P(yes) of an LLM verdict; None without an LLM


class Assessment(NamedTuple):
    """Scores and verdicts of a batch, without answer texts (for evaluation)."""

    scores: Tensor  # [B] image scores, in units of the calibrated threshold
    maps: Tensor  # [B, S, S] float32 anomaly maps on the CPU (pixel scores)
    anomalous: Tensor  # [B] bool: the verdict the detector reports
    probability: Tensor | None  # [B] P(yes) of an LLM verdict, None without an LLM


class DetectorSettings(Protocol):
    """The two settings every caller reads."""

    @property
    def model_id(self) -> str:
        """Recorded with every verdict."""
        ...

    @property
    def image_size(self) -> int:
        """Square input size; maps and masks have this size."""
        ...


class ReferenceState(Protocol):
    """A product's loaded references, as the pool and the worker see them."""

    @property
    def references(self) -> int:
        """Number of normal reference images."""
        ...

    @property
    def calibration(self) -> Calibration:
        """The map threshold calibrated on the references."""
        ...

    @property
    def version(self) -> int:
        """Pool version the references come from."""
        ...


class Detector(Protocol):
    """A few-shot anomaly detector serving several products."""

    @property
    def config(self) -> DetectorSettings:
        """Its settings (model id, input size)."""
        ...

    @property
    def verdict_source(self) -> VerdictSource:
        """Where `Detection.anomalous` comes from."""
        ...

    def pixels(self, images: Sequence[Image.Image]) -> Tensor:
        """Preprocess PIL images to the model's input [B, 3, S, S]."""
        ...

    def set_references(self, product: str, images: Sequence[Image.Image], *,
                       version: int = 0) -> ReferenceState:
        """Store a product's normal references and calibrate its map threshold."""
        ...

    def product(self, product: str) -> ReferenceState | None:
        """The product's references, or None when it has none."""
        ...

    def products(self) -> list[str]:
        """Products that have references."""
        ...

    def detect(self, product: str, images: Sequence[Image.Image]) -> list[Detection]:
        """One verdict per image (KeyError when the product has no references)."""
        ...

    def assess(self, product: str, pixels: Tensor) -> Assessment:
        """Scores, maps and verdicts of preprocessed pixels, without answer texts."""
        ...

    def evidence(self, product: str, detection: Detection) -> dict[str, object]:
        """The raw scores and thresholds behind a detection (for the audit trail)."""
        ...
