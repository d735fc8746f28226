"""Few-shot anomaly maps: 1 − max cosine similarity to the patches of normal references.

This is AnomalyGPT's few-shot image-decoder path (and PatchCore/AnomalyDINO's idea): every
query patch is compared with every patch of the k normal reference images of the product,
per tap; a patch that resembles nothing normal gets a high score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def build_memory(reference_taps: Sequence[Tensor]) -> list[Tensor]:
    """Flatten and L2-normalise reference patch features into one memory bank per tap.

    Args:
        reference_taps: One tensor per tap, each [K, N, C] (K references, N patches).

    Returns:
        One tensor per tap, [K*N, C], unit rows, float32.
    """
    return [F.normalize(t.float().reshape(-1, t.shape[-1]), dim=-1) for t in reference_taps]


def patch_distances(query: Tensor, memory: Tensor, *, exclude_image: int | None = None,
                    patches_per_image: int | None = None) -> Tensor:
    """1 − max cosine similarity of each query patch to the memory bank.

    Args:
        query: [B, N, C] query patch features (any scale; normalised here).
        memory: [M, C] unit-norm memory rows.
        exclude_image: Optionally drop the memory rows of reference image ``exclude_image``
            (leave-one-out scoring of a reference against the others).
        patches_per_image: Rows per reference image in ``memory`` (needed with exclude_image).

    Returns:
        [B, N] distances in [0, 2].
    """
    if exclude_image is not None:
        if patches_per_image is None:
            msg = "patches_per_image is required with exclude_image"
            raise ValueError(msg)
        start = exclude_image * patches_per_image
        memory = torch.cat([memory[:start], memory[start + patches_per_image :]])
    q = F.normalize(query.float(), dim=-1)
    similarity = q @ memory.T  # [B, N, M]
    return 1.0 - similarity.amax(dim=-1)


def gaussian_kernel1d(sigma: float) -> Tensor:
    """A normalised 1-D Gaussian kernel of radius 4·sigma (truncated)."""
    radius = max(1, int(math.ceil(4.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2.0 * sigma**2))
    return kernel / kernel.sum()


def gaussian_blur(maps: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of [B, H, W] maps with reflect padding."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel1d(sigma).to(maps.device)
    radius = kernel.numel() // 2
    x = maps.unsqueeze(1)
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def few_shot_map(
    query_taps: Sequence[Tensor],
    memory: Sequence[Tensor],
    *,
    grid: tuple[int, int],
    out_size: tuple[int, int],
    sigma: float = 4.0,
    exclude_image: int | None = None,
    views: int = 1,
) -> Tensor:
    """Anomaly map averaged over taps, upsampled to ``out_size`` and smoothed.

    Args:
        query_taps: One [B, N, C] tensor per tap (N = grid_h * grid_w, CLS removed).
        memory: One [M, C] unit-norm memory bank per tap (see :func:`build_memory`).
        grid: Patch grid (h, w) of the query.
        out_size: Output map size (H, W) in pixels.
        sigma: Gaussian smoothing in output pixels (0 disables).
        exclude_image: Leave-one-out: ignore this reference's rows (calibration).
        views: Memory rows per reference come in ``views`` consecutive images (augmented
            views of one reference), all excluded together.

    Returns:
        [B, H, W] float32 anomaly map (larger = more anomalous).
    """
    if len(query_taps) != len(memory):
        msg = f"{len(query_taps)} query taps but {len(memory)} memory banks"
        raise ValueError(msg)
    patches = grid[0] * grid[1] * views
    total = None
    for query, bank in zip(query_taps, memory, strict=True):
        distance = patch_distances(
            query, bank, exclude_image=exclude_image, patches_per_image=patches
        )
        coarse = distance.view(-1, 1, grid[0], grid[1])
        fine = F.interpolate(coarse, size=out_size, mode="bilinear", align_corners=False)
        total = fine if total is None else total + fine
    assert total is not None
    return gaussian_blur((total / len(query_taps)).squeeze(1), sigma)


def image_descriptors(taps: Sequence[Tensor]) -> Tensor:
    """Image-level descriptor: the mean patch feature of the deepest tap, L2-normalised.

    Catches shifts of texture or colour statistics over the whole image, which patch
    matching misses because every patch still resembles *some* normal patch. The deepest tap
    is used because shallow blocks' statistics vary with plain exposure and focus (on the
    textile set at 448 px: nominal-vs-global AUROC 0.85 from block 3, 0.998 from block 7).

    Args:
        taps: One [B, N, C] tensor per tap, shallowest first.

    Returns:
        [B, C] unit-norm rows.
    """
    return F.normalize(taps[-1].float().mean(dim=1), dim=-1)
