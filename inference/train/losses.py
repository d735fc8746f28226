"""Stage-2 losses: LM cross-entropy on the answer tokens + Σ over taps (focal + dice).

Focal and dice follow the reference (CASIA-IVA-Lab/AnomalyGPT `code/utils/loss.py`, used in
`openllama.py` `forward`): focal γ = 2 on the two-channel softmax map with the one-hot target
clamped to [1e-5, 1 − 1e-5] and 1e-5 added to p_t, averaged over all pixels; binary dice on the
abnormal channel with smoothing 1, averaged over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

__all__ = ["balanced_verdict_loss", "dice_loss", "first_answer_labels", "focal_loss", "lm_loss",
           "pixel_loss"]

_SMOOTH = 1e-5  # focal: label smoothing and p_t offset (reference default)
IGNORE = -100  # label of tokens without loss


def focal_loss(probabilities: Tensor, target: Tensor, gamma: float = 2.0) -> Tensor:
    """Focal loss of a two-state probability map.

    Args:
        probabilities: [B, 2, H, W] softmax over (normal, abnormal).
        target: [B, H, W] 0/1 mask.
        gamma: Focusing exponent.

    Returns:
        Scalar: mean over pixels of −(1 − p_t)^γ log p_t, p_t = Σ_c onehot_c·p_c + 1e-5 with
        the one-hot target clamped to [1e-5, 1 − 1e-5].
    """
    one_hot = F.one_hot(target.long(), 2).permute(0, 3, 1, 2).to(probabilities.dtype)
    one_hot = one_hot.clamp(_SMOOTH, 1.0 - _SMOOTH)
    pt = (one_hot * probabilities).sum(dim=1) + _SMOOTH
    return (-((1 - pt) ** gamma) * pt.log()).mean()


def dice_loss(abnormal: Tensor, target: Tensor) -> Tensor:
    """Binary dice loss, smoothing 1.

    Args:
        abnormal: [B, H, W] abnormal probability.
        target: [B, H, W] 0/1 mask.

    Returns:
        Scalar: 1 − mean over images of (2·Σ p·t + 1) / (Σ p + Σ t + 1).
    """
    p, t = abnormal.flatten(1), target.flatten(1).to(abnormal.dtype)
    dice = (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
    return 1 - dice.mean()


def pixel_loss(per_tap: Sequence[Tensor], target: Tensor) -> Tensor:
    """Σ over taps of focal + dice against the mask.

    Args:
        per_tap: Per tap [B, 2, H, W] softmax maps (`ImageDecoder.zero_shot_map().per_tap`).
        target: [B, H, W] 0/1 mask.
    """
    total = torch.zeros((), device=target.device)
    for probabilities in per_tap:
        total = total + focal_loss(probabilities, target) + dice_loss(probabilities[:, 1], target)
    return total


def lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy over the labelled (answer) tokens.

    Args:
        logits: [B, T, V] for positions 0..T-1.
        labels: [B, T] the token at each position, `IGNORE` where there is no loss; position
            t's logits predict label t + 1.

    Returns:
        Scalar: mean cross-entropy over the labelled tokens.
    """
    shifted = logits[:, :-1].float()
    targets = labels[:, 1:]
    return F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE)


def first_answer_labels(labels: Tensor) -> Tensor:
    """Labels of each row's first labelled token only (the verdict's " Yes" / " No").

    Args:
        labels: [B, T] token ids, `IGNORE` where there is no loss.

    Returns:
        [B, T]: `IGNORE` everywhere but at each row's first labelled position.
    """
    labelled = labels != IGNORE
    first = labelled.int().argmax(dim=1)  # [B] first labelled position (0 when none)
    rows = torch.arange(labels.shape[0], device=labels.device)[labelled.any(dim=1)]
    out = torch.full_like(labels, IGNORE)
    out[rows, first[rows]] = labels[rows, first[rows]]
    return out


def balanced_verdict_loss(logits: Tensor, labels: Tensor, anomalous: Tensor) -> Tensor:
    """Cross-entropy of the first answer token, half for the "Yes" rows, half for the "No" rows.

    With a plain mean, a batch stream that is mostly "No" (e.g. after anomalies the evidence
    does not show lose their LM loss) teaches the constant answer "No"; here each class weighs
    0.5 whatever its share of the batch (a class absent from the batch adds nothing).

    Args:
        logits: [B, T, V] for positions 0..T-1.
        labels: [B, T] answer token ids, `IGNORE` elsewhere (`first_answer_labels` is applied).
        anomalous: [B] bool, the rows whose answer is "Yes".

    Returns:
        Scalar: 0.5 · mean CE over anomalous rows + 0.5 · mean CE over normal rows (rows
        without a labelled token are left out).
    """
    first = first_answer_labels(labels)[:, 1:]
    shifted = logits[:, :-1].float()
    per_token = F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), first.reshape(-1),
                                ignore_index=IGNORE, reduction="none").view(first.shape)
    labelled = (first != IGNORE).any(dim=1)
    per_row = per_token.sum(dim=1)
    total = torch.zeros((), device=logits.device)
    for rows in (anomalous & labelled, ~anomalous & labelled):
        if rows.any():
            total = total + 0.5 * per_row[rows].mean()
    return total
