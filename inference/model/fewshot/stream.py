"""Stream memory: each new frame is also scored against the recent frames of its product.

A line produces mostly normal parts, so the last few frames hold the normal variety (pose,
light, the stochastic detail of a texture) that one or two reference photos lack. MuSc
(Li et al., ICLR 2024) scores every patch of an image against every other unlabeled image of
the same product and aggregates the *lowest* fraction of those per-image distances: a normal
patch finds close matches in most normal frames, while a defect patch finds none in any
frame that lacks that defect. Because only the lowest fraction counts, a few defective
frames in the window do not lower the score of a normal patch, and a defect that is absent
from most window frames keeps a high score.

Here the window is causal and bounded: the features of the ``window`` most recent frames of
a product (oldest dropped first). For each query patch and window frame the distance is
1 − max cosine similarity to that frame's patches (per tap, averaged over taps); the mean
of the lowest ``fraction`` of the per-frame distances (at least one frame; 0.15 of 16 = the
two closest frames) is the patch's stream distance. The detector combines it with the
reference-pool distance as ``(1 − w) · d_pool + w · min(d_pool, d_stream)``
(:func:`combine_with_pool`, ``w`` = ``stream_weight``, 1.0 by default: the lower of the
two). The stream only lowers distances, so the pool's calibrated threshold stays an upper
bound for normal frames (their false-alarm rate at most the configured one, whatever the
window holds). Only frames the detector judged normal join the window: a defect the pool
flags on one part never enters it, so the same defect on the following parts is still
compared with clean frames and flagged (measured with one drawn defect pasted on 16
consecutive brick parts after 16 normal ones, 1 shot: see the README). A defect the pool
misses on its first part enters the window and can then hide on the next parts: that is the
price of the stream, measured in the same case.

Measured on ``agpt data synth`` (seed 0, 1 shot, image / pixel AUROC, textures mean, with
the gate and the calibrated threshold as ``agpt eval`` runs them): 0.850 / 0.881 with the
earlier ``(d_pool + min(d_pool, d_stream)) / 2`` and the lowest 30 % (5 of 16 frames),
0.859 / 0.888 with the lower of the two over the two closest frames. A mean over five
frames, each only 256 patches, stays above the distance to the pool's thousands of rows
for most normal patches, so the stream changed little; window 32 gave no more (and costs
twice the matching).

With the detector's ``stream_global`` (on by default: see `FewShotConfig`), the image
descriptor (`memory.image_descriptors`, the global part's feature) gets the same treatment
(:meth:`StreamWindow.global_distances`): its distance to the pool's references is
lowered to the mean distance to the closest window frames' descriptors. The references of
a pool come from one session; the line's next parts drift (another band of the same
material, light) and their descriptors sit farther from every reference than the
references sit from each other, which the pool's leave-one-out bound cannot know.

A streamed distance has a bound of its own (:meth:`StreamWindow.global_calibration`): each
window frame's streamed distance with itself left out (its pool distance, lowered to the
mean distance to its closest *other* window frames) is a normal score of exactly the
statistic a new frame gets, on the line's current parts, and their log-t prediction bound
is the window's threshold; the detector holds a streamed distance to the lower of that and
the references' bound. Either alone keeps the rate (a streamed distance is never above the
pool distance the references' bound was made for), and the window's bound tightens as
much as the stream lowers normal frames: held to the references' bound alone, the stream
lowered a subtle textile "global" frame 0.0103 -> 0.0088 under its 0.0096 (the clean-clone
CI of session 7). The window needs ``global_min_frames`` (8) frames with descriptors first;
until then the pool distance and the references' bound decide. Figures (false alarms at 1 to
8 shots, both seeds) are in the README. Earlier, held to the references' bound alone: false
alarms on seed 1 at 8 shots grass 17/60 -> 1/60, brick 7/60 -> 0/60. A defect of the image
statistics repeated on many consecutive parts stays flagged: flagged frames never enter the
window (`tests/inference/model/fewshot/test_stream_window.py`). Tried and not kept: a floor
under the pool's bound from the recent frames' global distances (median + MAD of their logs,
a log-t prediction bound): learnt only from unflagged frames, it saw a sample truncated at a
bound that was too low (4 / 60 at 8 references, 21 / 60 at 6); with flagged frames counted
as censored ranks, a run of 10 defects in a window of 32 raised the bound by 66 %, and a run
of 24 at 1.3 times the bound went unflagged after 8. (The window's bound here is not a floor
under the references' bound: it only tightens the judgement, and a streamed distance is held
to it only while the references' bound is looser.)

Memory bound: ``window · taps · patches · channels`` float32 values per product
(16 frames · 3 taps · 256 patches · 384 channels · 4 bytes = 18.9 MB at 224 px, plus one
384-channel descriptor a frame; four times
that at 448 px). The window lives in the worker's memory only: after a restart it is empty
and fills again with the next frames (until ``min_frames`` frames are in, verdicts use the
pool alone, exactly as with the stream off, and the global part until ``global_min_frames``);
a pool change (new
references) empties it too, so frames judged against the old pool do not carry over.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .calibration import Calibration, threshold_from_normal_scores

# Image descriptors closer than this (1 − cosine) are the same image (float32 rounding).
REPEAT_DISTANCE = 1e-5


def frame_distances(query: Sequence[Tensor], frames: Sequence[Sequence[Tensor]]) -> Tensor:
    """Per query patch and window frame: 1 − max cosine similarity, averaged over taps.

    Args:
        query: One [B, N, C] tensor per tap (any scale).
        frames: The window, each frame one [N', C] unit-row tensor per tap.

    Returns:
        [B, N, W] distances (W = number of frames).
    """
    batch, patches, _ = query[0].shape
    total = torch.zeros(batch * patches, len(frames))
    for tap, q in enumerate(query):
        rows = F.normalize(q.float().reshape(batch * patches, -1), dim=-1)
        bank = torch.cat([frame[tap] for frame in frames])  # [W*N', C]
        similarity = torch.mm(rows, bank.t()).view(batch * patches, len(frames), -1)
        total += 1.0 - similarity.amax(dim=-1)
    return (total / len(query)).view(batch, patches, len(frames))


def lowest_fraction_mean(distances: Tensor, fraction: float) -> Tensor:
    """Mean of the lowest ``fraction`` of the last dimension (at least one value)."""
    count = max(1, round(fraction * distances.shape[-1]))
    return distances.topk(count, dim=-1, largest=False).values.mean(dim=-1)


def combine_with_pool(pool: Tensor, stream: Tensor, weight: float) -> Tensor:
    """``(1 − weight) · pool + weight · min(pool, stream)``: never above ``pool``.

    Args:
        pool: Distances to the reference pool (any shape).
        stream: Stream distances of the same patches (same shape).
        weight: In [0, 1]; 0 ignores the stream, 1 takes the lower of the two.
    """
    if not 0.0 <= weight <= 1.0:
        msg = f"stream weight must be in [0, 1], got {weight}"
        raise ValueError(msg)
    return (1.0 - weight) * pool + weight * torch.minimum(pool, stream)


class StreamWindow:
    """The bounded window of one product's recent frame features.

    Args:
        size: Frames kept (the oldest is dropped first); must be >= 1.
        fraction: Share of the window frames whose distances are averaged (lowest first).
        min_frames: Frames needed before the window scores anything.
        global_min_frames: Frames with descriptors needed before the window lowers global
            distances and calibrates their bound (`global_calibration`).
    """

    def __init__(self, size: int, *, fraction: float = 0.15, min_frames: int = 4,
                 global_min_frames: int = 8) -> None:
        if size < 1:
            msg = f"stream window must hold at least one frame, got {size}"
            raise ValueError(msg)
        if not 0.0 < fraction <= 1.0:
            msg = f"stream fraction must be in (0, 1], got {fraction}"
            raise ValueError(msg)
        self.size = size
        self.fraction = fraction
        self.min_frames = max(1, min(min_frames, size))
        self._frames: deque[list[Tensor]] = deque(maxlen=size)
        self._descriptors: deque[Tensor] = deque(maxlen=size)
        self._pool_global: deque[float] = deque(maxlen=size)
        self.global_min_frames = max(2, min(global_min_frames, size))
        self._global_bound: Calibration | None = None  # cached until the next push
        self._global_bound_key: tuple[float, float] = (0.0, 0.0)

    def __len__(self) -> int:
        """Frames held now."""
        return len(self._frames)

    @property
    def ready(self) -> bool:
        """Whether enough frames are in to score against."""
        return len(self._frames) >= self.min_frames

    def distances(self, query: Sequence[Tensor]) -> Tensor | None:
        """[B, N] stream distances of query patches, or None while not ``ready``."""
        if not self.ready:
            return None
        return lowest_fraction_mean(frame_distances(query, list(self._frames)), self.fraction)

    @property
    def global_ready(self) -> bool:
        """Whether enough frames' descriptors are in for the global part."""
        return len(self._descriptors) >= self.global_min_frames

    def global_distances(self, descriptors: Tensor) -> Tensor | None:
        """[B] stream distances of image descriptors ([B, C] unit rows), or None.

        Per window frame 1 − cosine similarity of the two descriptors
        (`memory.image_descriptors`), then the mean of the lowest ``fraction``: the image-level
        analogue of :meth:`distances`. None until ``global_ready``.
        """
        if not self.global_ready:
            return None
        return lowest_fraction_mean(1.0 - descriptors.float() @ self._descriptor_bank().t(),
                                    self.fraction)

    def global_calibration(self, *, false_alarm_rate: float, weight: float) -> Calibration | None:
        """The bound of streamed global distances, from the window's own frames (or None).

        Each window frame's streamed distance with itself left out —
        ``combine_with_pool(its pool distance, mean of its closest other window frames)`` —
        is a normal score of exactly the statistic a new frame gets, on the line's current
        parts; the log-t prediction bound of those scores (`threshold_from_normal_scores`)
        is the threshold. The references' bound cannot serve alone: the stream lowers normal and
        defective frames' distances alike, so a subtle defect of the image statistics would
        sink under a bound made for pool-only distances. None until ``global_ready``.
        """
        if not self.global_ready:
            return None
        key = (false_alarm_rate, weight)
        if self._global_bound is None or self._global_bound_key != key:
            self._global_bound_key = key
            bank = self._descriptor_bank()
            distances = 1.0 - bank @ bank.t()
            distances.fill_diagonal_(float("inf"))  # leave the frame itself out
            count = max(1, round(self.fraction * (len(bank) - 1)))
            nearest = distances.topk(count, dim=-1, largest=False).values.mean(dim=-1)
            pool = torch.tensor(list(self._pool_global), dtype=nearest.dtype)
            scores = combine_with_pool(pool, nearest, weight).clamp_min(1e-12)
            self._global_bound = threshold_from_normal_scores(
                scores.numpy(), false_alarm_rate=false_alarm_rate,
                method="stream-leave-one-out")
        return self._global_bound

    def push(self, taps: Sequence[Tensor], keep: Sequence[bool] | None = None, *,
             descriptors: Tensor | None = None, pool_global: Tensor | None = None) -> None:
        """Append the frames of a batch (one [B, N, C] tensor per tap), oldest first.

        Args:
            taps: The batch's features.
            keep: Optionally per frame whether it joins the window (the detector passes its
                "normal" verdicts: flagged frames stay out).
            descriptors: The batch's image descriptors ([B, C] unit rows), kept for the
                global part (`global_distances`) only when given (``stream_global``).
            pool_global: With ``descriptors``, the frames' distances to the pool's
                references ([B]): the streamed bound (`global_calibration`) needs them.
        """
        if (descriptors is None) != (pool_global is None):
            msg = "descriptors and pool_global go together"
            raise ValueError(msg)
        for index in range(taps[0].shape[0]):
            if keep is not None and not keep[index]:
                continue
            self._frames.append([F.normalize(t[index].float(), dim=-1).contiguous()
                                 for t in taps])
            if descriptors is not None and pool_global is not None:
                descriptor = descriptors[index].float()
                if self._repeats_a_frame(descriptor):
                    continue
                self._descriptors.append(descriptor.clone())
                self._pool_global.append(float(pool_global[index]))
        self._global_bound = None

    def _repeats_a_frame(self, descriptor: Tensor) -> bool:
        """Whether the window already holds this very image (a replayed frame).

        A copy adds no normal variety, and copies would give the window's bound a spread of
        zero (every normal frame that is not a copy would then be flagged).
        """
        if not self._descriptors:
            return False
        return bool((1.0 - self._descriptor_bank() @ descriptor).min() < REPEAT_DISTANCE)

    def _descriptor_bank(self) -> Tensor:
        """[W, C] the window frames' image descriptors, oldest first."""
        return torch.stack(list(self._descriptors))

    def clear(self) -> None:
        """Forget every frame (pool change)."""
        self._frames.clear()
        self._descriptors.clear()
        self._pool_global.clear()
        self._global_bound = None

    def nbytes(self) -> int:
        """Bytes held by the frame features."""
        frames = sum(t.numel() * t.element_size() for frame in self._frames for t in frame)
        return frames + sum(d.numel() * d.element_size() for d in self._descriptors)
