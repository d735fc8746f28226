"""What AnomalyGPT needs from an image encoder, so that ImageBind and DINOv2 both plug in.

AnomalyGPT reads two things from the image: a unit-norm global embedding (→ `llama_proj`, one
LLM token) and raw block outputs ("taps", CLS at index 0 → the image decoder's maps). The
zero-shot map also needs text features in the same space, which only a text-aligned encoder
(ImageBind) has; a vision-only encoder (DINOv2) serves the few-shot path.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from torch import Tensor

__all__ = ["ImageEncoder", "ImageFeatures", "ZeroShotUnavailableError", "no_text_encoder"]


class ImageFeatures(NamedTuple):
    """What `encode_image` returns."""

    global_embedding: Tensor  # [B, embed_dim], L2-normalised
    taps: list[Tensor]  # per tap layer: raw block output [B, 1 + num_patches, vision_width]


class ZeroShotUnavailableError(ValueError):
    """The encoder has no text tower, so there is no zero-shot map."""


def no_text_encoder(name: str) -> ZeroShotUnavailableError:
    """The error raised when a zero-shot map (text features) is asked of `name`."""
    msg = (f"{name} has no text encoder: the zero-shot anomaly map needs a text-aligned "
           "encoder such as ImageBind; give normal reference images (few-shot) instead")
    return ZeroShotUnavailableError(msg)


@runtime_checkable
class ImageEncoder(Protocol):
    """An image encoder AnomalyGPT can compose with.

    Attributes:
        vision_width: Width W of each tap (1280 ImageBind-Huge, 384 DINOv2-S).
        embed_dim: Width of the global embedding (`llama_proj` input; decoder output).
        num_taps: Number of taps returned by `encode_image`.
        image_size: Square input size in pixels.
        patch_size: Patch size in pixels (taps hold (image_size / patch_size)² patches).
        mean: Per-channel normalisation mean of the expected pixels.
        std: Per-channel normalisation std.
        supports_text: Whether `encode_text` works (zero-shot maps).
    """

    # Read-only properties: implementations may use plain attributes or properties.
    @property
    def vision_width(self) -> int:
        """Width W of each tap."""
        ...

    @property
    def embed_dim(self) -> int:
        """Width of the global embedding."""
        ...

    @property
    def num_taps(self) -> int:
        """Number of taps."""
        ...

    @property
    def image_size(self) -> int:
        """Square input size in pixels."""
        ...

    @property
    def patch_size(self) -> int:
        """Patch size in pixels."""
        ...

    @property
    def mean(self) -> tuple[float, float, float]:
        """Normalisation mean."""
        ...

    @property
    def std(self) -> tuple[float, float, float]:
        """Normalisation std."""
        ...

    @property
    def supports_text(self) -> bool:
        """Whether `encode_text` works."""
        ...

    def encode_image(self, pixels: Tensor) -> ImageFeatures:
        """[B, 3, S, S] normalised pixels → global embedding and taps (CLS at index 0)."""
        ...

    def encode_text(self, ids: Tensor) -> Tensor:
        """Unit-norm text embeddings [B, embed_dim].

        Raises `ZeroShotUnavailableError` when `supports_text` is False.
        """
        ...
