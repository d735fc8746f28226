"""The silhouette check of a pool of parts: each query's outline against the posed references.

Patch matching cannot see a piece missing from a gear's rim or a dent in an outline: the
spot still looks like some normal patch (the gap between two teeth, the straight edge
elsewhere). Where every reference of a pool shows a part on a plain background
(`pose.silhouette`), the query's silhouette is aligned to each reference's (`pose.align`:
rotation, scale, position) and the two are compared pixel by pixel; the disagreement
averaged over small blobs (`pose.blob_map`) is high where material is missing or added and
low along the outline's sub-pixel misalignment. The maximum of that map is a part of the
image score with its own calibration (`calibration`): normal scores from the references
against each other and from their rotated copies.

Measured on ``agpt data synth`` (1 reference, the blob maximum alone as the image score):
image AUROC gear 0.90 (missing 1.00, extra 1.00, dent 0.99, crack 0.62), bracket 0.84
(missing 1.00, extra 1.00, dent 1.00, crack 0.37), where the patch map gave 0.76 / 0.83;
cracks (dark lines inside the outline) stay the patch map's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from torch import Tensor

from .pose import Silhouette, align, blob_map, difference, silhouette

# References a query is compared with (those whose profiles agree best with the query's).
COMPARED_REFERENCES = 2


def grey_levels(pixels: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """[B, H, W] grey levels (0-1) of normalised pixels [B, 3, H, W]."""
    array = pixels.detach().float().cpu().numpy()
    channels = array * np.asarray(std).reshape(1, 3, 1, 1) + np.asarray(mean).reshape(1, 3, 1, 1)
    return channels.mean(axis=1)


def pool_silhouettes(grey: np.ndarray) -> list[Silhouette] | None:
    """Each reference's silhouette, or None unless every reference shows a part."""
    found = [silhouette(image) for image in grey]
    if any(item is None for item in found):
        return None
    return [item for item in found if item is not None]


def difference_map(query: Silhouette | None, references: Sequence[Silhouette]) -> np.ndarray:
    """[H, W] blob map of the query against the reference that explains it best.

    A query without a silhouette (no part found) gets an all-zero map: the check has no
    evidence there and the patch map judges the frame alone.
    """
    if query is None:
        return np.zeros_like(references[0].mask, dtype=np.float32)
    # Whole references first (one cut by the border hides part of the outline), then by
    # how well their profiles agree with the query's.
    ranked = sorted(references, key=lambda ref: (not ref.whole, -align_agreement(query, ref)))
    maps = [blob_map(difference(query, ref, align(query, ref)))
            for ref in ranked[:COMPARED_REFERENCES]]
    return min(maps, key=lambda m: float(m.max())).astype(np.float32)


def align_agreement(query: Silhouette, reference: Silhouette) -> float:
    """How well the profiles correlate at their best rotation (cheap ranking of references)."""
    q = query.profile - query.profile.mean(axis=1, keepdims=True)
    r = reference.profile - reference.profile.mean(axis=1, keepdims=True)
    corr = np.fft.irfft((np.fft.rfft(q, axis=1) * np.conj(np.fft.rfft(r, axis=1))).sum(0),
                        n=q.shape[1])
    norm = float(np.sqrt((q * q).sum() * (r * r).sum())) or 1.0
    return float(corr.max()) / norm


def query_maps(grey: np.ndarray, references: Sequence[Silhouette]) -> np.ndarray:
    """[B, H, W] blob maps of a batch of query grey images."""
    return np.stack([difference_map(silhouette(image, strict=False), references)
                     for image in grey])


def rotated_copies(grey: np.ndarray, step: float) -> np.ndarray:
    """[R * c, H, W]: each grey image turned half a step past every multiple of ``step``.

    The corners the turn uncovers take the median of the picture's border (the belt).
    """
    angles = np.arange(step / 2, 360.0, step)
    copies = []
    for image in grey:
        belt = float(np.median(np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])))
        copies += [ndimage.rotate(image, float(angle), reshape=False, order=1, mode="constant",
                                  cval=belt) for angle in angles]
    return np.stack(copies)


def copied_whole(references: Sequence[Silhouette], limit: int) -> list[int]:
    """Indices of up to ``limit`` references whose part stays off the border.

    A turned copy of a part cut by the border shows the cut inside the picture, where no
    normal part has one. Without any whole reference the first ``limit`` are copied.
    """
    whole = [index for index, ref in enumerate(references) if ref.whole]
    return (whole or list(range(len(references))))[:limit]


def normal_scores(references: Sequence[Silhouette], copies: np.ndarray,
                  copied: Sequence[int]) -> np.ndarray:
    """Blob maxima that normal parts reach: leave-one-out and rotated copies.

    Args:
        references: The pool's silhouettes (K).
        copies: [R * c, H, W] grey levels of c rotated copies of each of R references,
            grouped by reference (those of `copied_whole`).
        copied: The indices of the R references in ``references``.

    Returns:
        K leave-one-out maxima (K > 1) then R * c copy maxima, each against the other
        references (against its own reference when K = 1).
    """
    scores = [float(difference_map(ref, [*references[:i], *references[i + 1 :]]).max())
              for i, ref in enumerate(references)] if len(references) > 1 else []
    per = len(copies) // max(1, len(copied))
    for index, image in enumerate(copies):
        owner = copied[index // per]
        others = ([*references[:owner], *references[owner + 1 :]]
                  if len(references) > 1 else list(references))
        scores.append(float(difference_map(silhouette(image, strict=False), others).max()))
    return np.maximum(np.asarray(scores), 1e-4)
