"""AnomalyGPT's image decoder: zero-shot (text) and few-shot (reference) anomaly maps.

Follows CASIA-IVA-Lab/AnomalyGPT `code/model/AnomalyGPT_models.py` (`LinearLayer`) and
`code/model/openllama.py` (`forward`, `extract_multimodal_feature`):

- Zero-shot: each ImageBind tap (CLS dropped) goes through its own `fc[i]` Linear(1280→1024),
  is L2-normalised and scored against the two state-prompt text features with logit scale 100;
  the [B, 2, 16, 16] logits are upsampled bilinearly (align_corners=True) to 224, softmaxed over
  the two states, and the abnormal channel is averaged over the taps.
- Few-shot: raw tap features (no fc), 1 − max cosine similarity of each query patch to every
  patch of the k normal references, averaged over taps, upsampled the same way. The official
  code averages the similarities at 16×16 and upsamples `1 − sim`; bilinear interpolation is
  linear with weights summing to 1, so that equals upsampling each tap's distance and averaging.
  No Gaussian smoothing is applied in the model (unlike `fewshot.memory.memory_map`, which uses
  align_corners=False and smooths for the training-free detector).

Differences from the reference: the map arithmetic after `fc` runs in float32 whatever the
weight dtype (the reference runs it in the model dtype, fp16 under DeepSpeed).

A vision-only encoder (DINOv2 in the CPU composition) has no text tower to give the two state
features. There the decoder learns them: `states` [2, embed_dim] (normal, abnormal), saved as
`image_decoder.states`, take the place of the state-prompt text features, and stage-2 training
(focal + dice against simulated masks, `inference/train`) fits them with `fc` (`learned_map`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from ..fewshot.memory import build_memory, patch_distances

__all__ = ["ImageDecoder", "ZeroShotMaps", "reference_map"]

_LOGIT_SCALE = 100.0  # fixed in the reference (`100.0 * patch_tokens @ text.T`)


class ZeroShotMaps(NamedTuple):
    """What `ImageDecoder.zero_shot_map` returns."""

    map: Tensor  # [B, H, W] abnormal probability averaged over taps
    per_tap: list[Tensor]  # per tap [B, 2, H, W] softmax over (normal, abnormal); for losses


def _size(out_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(out_size, int):
        return (out_size, out_size)
    return (int(out_size[0]), int(out_size[1]))


def _grid(num_patches: int) -> int:
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        msg = f"{num_patches} patch tokens do not form a square grid"
        raise ValueError(msg)
    return side


def _patches(tap: Tensor) -> Tensor:
    """[B, 1 + N, C] tap → [B, N, C] patch tokens (CLS at index 0 dropped)."""
    if tap.ndim != 3:
        msg = f"a tap must be [B, 1 + N, C], got {tuple(tap.shape)}"
        raise ValueError(msg)
    return tap[:, 1:]


def _upsample(grid_maps: Tensor, out_size: tuple[int, int]) -> Tensor:
    """[B, C, h, w] → [B, C, H, W], bilinear with align_corners=True as in the reference."""
    return F.interpolate(grid_maps, size=out_size, mode="bilinear", align_corners=True)


class ImageDecoder(nn.Module):
    """Per-tap linear projections of ImageBind patch tokens into the joint text space.

    Args:
        vision_width: Tap feature width (1280 for ImageBind-Huge).
        embed_dim: Joint embedding width (1024).
        taps: Number of tapped blocks (4).

        learned_states: Also learn the (normal, abnormal) state features, for encoders
            without a text tower (`states`, not in the official ImageBind layout).

    Parameter names `fc.{i}.weight/bias` match the official delta under `image_decoder.`.
    """

    def __init__(self, vision_width: int = 1280, embed_dim: int = 1024, taps: int = 4, *,
                 learned_states: bool = False) -> None:
        super().__init__()
        self.fc = nn.ModuleList(nn.Linear(vision_width, embed_dim) for _ in range(taps))
        self.states: nn.Parameter | None = (
            nn.Parameter(torch.randn(2, embed_dim) / math.sqrt(embed_dim))
            if learned_states else None
        )

    def project(self, taps: Sequence[Tensor]) -> list[Tensor]:
        """Unit-norm patch tokens per tap.

        Args:
            taps: One raw tap per `fc`, each [B, 1 + N, vision_width] with CLS at index 0.

        Returns:
            One [B, N, embed_dim] float32 tensor per tap, L2-normalised along the last dim.
        """
        if len(taps) != len(self.fc):
            msg = f"{len(taps)} taps given, the decoder has {len(self.fc)} projections"
            raise ValueError(msg)
        out = []
        for fc, tap in zip(self.fc, taps, strict=True):
            tokens = fc(_patches(tap).to(next(fc.parameters()).dtype))
            out.append(F.normalize(tokens.float(), dim=-1))
        return out

    def zero_shot_map(
        self,
        taps: Sequence[Tensor],
        text_features: Tensor,
        out_size: int | tuple[int, int] = 224,
    ) -> ZeroShotMaps:
        """Text-prompted anomaly map.

        Args:
            taps: One raw tap per `fc`, each [B, 1 + N, vision_width], N a square (256).
            text_features: [2, D] (normal, abnormal) unit-norm state-prompt features shared by
                the batch, or [B, 2, D] per image (training batches mix classes).
            out_size: Output map size in pixels (int for square).

        Returns:
            `ZeroShotMaps`: `map` [B, H, W] in [0, 1] and `per_tap` [B, 2, H, W] probabilities.
        """
        size = _size(out_size)
        text = text_features.float()
        if text.ndim not in (2, 3) or text.shape[-2] != 2:
            msg = f"text_features must be [2, D] or [B, 2, D], got {tuple(text.shape)}"
            raise ValueError(msg)
        per_tap = []
        for tokens in self.project(taps):
            batch, patches, _ = tokens.shape
            side = _grid(patches)
            logits = _LOGIT_SCALE * tokens @ text.to(tokens.device).transpose(-2, -1)  # [B, N, 2]
            logits = logits.transpose(1, 2).reshape(batch, 2, side, side)
            per_tap.append(torch.softmax(_upsample(logits, size), dim=1))
        abnormal = torch.stack([p[:, 1] for p in per_tap]).mean(dim=0)
        return ZeroShotMaps(abnormal, per_tap)

    def learned_map(self, taps: Sequence[Tensor],
                    out_size: int | tuple[int, int] = 224) -> ZeroShotMaps:
        """The zero-shot map against the learned `states` instead of text features.

        Args:
            taps: One raw tap per `fc`, each [B, 1 + N, vision_width].
            out_size: Output map size in pixels.

        Returns:
            `ZeroShotMaps` as `zero_shot_map`.

        Raises:
            ValueError: the decoder was built without `learned_states`.
        """
        if self.states is None:
            msg = "this decoder has no learned states (built for a text-aligned encoder)"
            raise ValueError(msg)
        return self.zero_shot_map(taps, F.normalize(self.states.float(), dim=-1), out_size)


def reference_map(
    query_taps: Sequence[Tensor],
    reference_taps: Sequence[Tensor],
    out_size: int | tuple[int, int] = 224,
) -> Tensor:
    """Reference-based anomaly map: 1 − max cosine similarity to normal patches, per tap.

    Args:
        query_taps: Raw taps of the query images, each [B, 1 + N, C] (CLS at index 0).
        reference_taps: Raw taps of the normal references, per tap either [K, 1 + N, C]
            (shared by the whole batch, inference) or [B, K, 1 + N, C] (own references per
            query, training). All K·N reference patches of a tap form its memory.
        out_size: Output map size in pixels (int for square).

    Returns:
        [B, H, W] float32 map, averaged over taps; 0 = identical to some normal patch.
    """
    if len(query_taps) != len(reference_taps):
        msg = f"{len(query_taps)} query taps but {len(reference_taps)} reference taps"
        raise ValueError(msg)
    size = _size(out_size)
    distances = []
    for query, refs in zip(query_taps, reference_taps, strict=True):
        patches = _patches(query)  # [B, N, C]
        if refs.ndim == 3:  # shared references
            (memory,) = build_memory([_patches(refs)])
            distance = patch_distances(patches, memory.to(patches.device))
        elif refs.ndim == 4 and refs.shape[0] == patches.shape[0]:  # references per query
            distance = torch.cat([
                patch_distances(patches[b : b + 1], build_memory([refs[b, :, 1:]])[0])
                for b in range(patches.shape[0])
            ])
        else:
            msg = (f"reference tap must be [K, 1 + N, C] or [B, K, 1 + N, C] with "
                   f"B={patches.shape[0]}, got {tuple(refs.shape)}")
            raise ValueError(msg)
        distances.append(distance)  # [B, N]
    mean = torch.stack(distances).mean(dim=0)
    side = _grid(mean.shape[1])
    return _upsample(mean.view(-1, 1, side, side), size).squeeze(1)
