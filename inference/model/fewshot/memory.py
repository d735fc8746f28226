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


def patch_distances(query: Tensor, memory: Tensor, *, exclude: Tensor | None = None) -> Tensor:
    """1 − max cosine similarity of each query patch to the memory bank.

    Args:
        query: [B, N, C] query patch features (any scale; normalised here).
        memory: [M, C] unit-norm memory rows.
        exclude: Optional bool [M]: rows to ignore (leave-one-out scoring of a reference
            against the others).

    Returns:
        [B, N] distances in [0, 2].
    """
    if exclude is not None:
        memory = memory[~exclude]
    batch, patches, channels = query.shape
    # One 2-D matmul on contiguous rows: faster than a batched one on the strided
    # (CLS-sliced) tap output.
    q = F.normalize(query.float().reshape(batch * patches, channels), dim=-1)
    similarity = torch.mm(q, memory.t())  # [B*N, M]
    return (1.0 - similarity.amax(dim=-1)).view(batch, patches)


def coreset_indices(rows: Tensor, size: int, *, projection_dim: int = 128,
                    seed: int = 0) -> Tensor:
    """Greedy k-center coreset (PatchCore): ``size`` rows that cover all the others.

    Each step adds the row farthest from those chosen so far, so the subset keeps the
    unusual-but-normal patches a random subsample would drop. Distances are computed on a
    fixed random projection for speed.

    Args:
        rows: [M, C] features.
        size: Rows to keep (all are kept when M <= size).
        projection_dim: Width of the random projection (0 = none).
        seed: Seed of the projection and of the first centre.

    Returns:
        LongTensor [min(M, size)] of row indices.
    """
    count = rows.shape[0]
    if count <= size:
        return torch.arange(count)
    generator = torch.Generator().manual_seed(seed)
    points = rows.float()
    if 0 < projection_dim < rows.shape[1]:
        projection = torch.randn(rows.shape[1], projection_dim, generator=generator)
        points = points @ (projection / math.sqrt(projection_dim))
    points = points.contiguous()
    norms = (points * points).sum(dim=1)  # squared distances via |p|² + |c|² − 2 p·c
    chosen = torch.empty(size, dtype=torch.long)
    index = int(torch.randint(count, (1,), generator=generator))
    nearest = torch.full((count,), float("inf"))
    for step in range(size):
        chosen[step] = index
        distance = norms - 2.0 * torch.mv(points, points[index]) + norms[index]
        torch.minimum(nearest, distance, out=nearest)
        index = int(torch.argmax(nearest))
    return chosen


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


def memory_map(
    query_taps: Sequence[Tensor],
    memory: Sequence[Tensor],
    *,
    grid: tuple[int, int],
    out_size: tuple[int, int],
    sigma: float = 4.0,
    exclude: Sequence[Tensor] | None = None,
) -> Tensor:
    """Anomaly map averaged over taps, upsampled to ``out_size`` and smoothed.

    Args:
        query_taps: One [B, N, C] tensor per tap (N = grid_h * grid_w, CLS removed).
        memory: One [M, C] unit-norm memory bank per tap (see :func:`build_memory`).
        grid: Patch grid (h, w) of the query.
        out_size: Output map size (H, W) in pixels.
        sigma: Gaussian smoothing in output pixels (0 disables).
        exclude: Optionally one bool [M] per tap: memory rows to ignore (leave-one-out
            calibration).

    Returns:
        [B, H, W] float32 anomaly map (larger = more anomalous).
    """
    if len(query_taps) != len(memory):
        msg = f"{len(query_taps)} query taps but {len(memory)} memory banks"
        raise ValueError(msg)
    total = None
    for index, (query, bank) in enumerate(zip(query_taps, memory, strict=True)):
        distance = patch_distances(query, bank, exclude=exclude[index] if exclude else None)
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
