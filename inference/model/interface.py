"""What the service needs of a detector: the worker, pool, evaluation and chat depend on this.

Two implementations: `detector.FewShotDetector` (the CPU profiles; the verdict is the map
score against a calibrated threshold) and `anomalygpt_detector.AnomalyGPTDetector` (the
released model; the verdict is the LLM's yes/no from one prefill). Typing only: nothing here
runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from PIL import Image
from torch import Tensor

from .calibration import Calibration
from .detector import Assessment, Detection

__all__ = ["Assessment", "Detection", "Detector", "DetectorSettings", "ReferenceState",
           "VerdictSource"]

VerdictSource = Literal["llm", "calibrated-threshold"]


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
