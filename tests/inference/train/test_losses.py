"""Focal, dice and LM losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from inference.train.losses import (
    IGNORE,
    balanced_verdict_loss,
    dice_loss,
    first_answer_labels,
    focal_loss,
    lm_loss,
    pixel_loss,
)


def test_focal_loss_matches_the_formula_by_hand():
    # Two pixels: abnormal probability 0.8 on an anomalous pixel, 0.3 on a normal one.
    probabilities = torch.tensor([[[[0.2, 0.7]], [[0.8, 0.3]]]])  # [1, 2, 1, 2]
    target = torch.tensor([[[1, 0]]])
    eps = 1e-5
    # p_t = (1 - eps)·p_true + eps·p_other + eps
    pt1 = (1 - eps) * 0.8 + eps * 0.2 + eps
    pt2 = (1 - eps) * 0.7 + eps * 0.3 + eps
    expected = (-(1 - pt1) ** 2 * math.log(pt1) - (1 - pt2) ** 2 * math.log(pt2)) / 2
    assert float(focal_loss(probabilities, target)) == pytest.approx(expected, rel=1e-6)
    assert float(focal_loss(probabilities, target, gamma=0)) == pytest.approx(
        (-math.log(pt1) - math.log(pt2)) / 2, rel=1e-6)


def test_dice_loss_matches_the_formula_by_hand():
    abnormal = torch.tensor([[[0.8, 0.3]], [[0.0, 0.0]]])  # [2, 1, 2]
    target = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]]])
    first = 1 - (2 * 0.8 + 1) / (1.1 + 1 + 1)
    second = 1 - (0 + 1) / (0 + 0 + 1)  # an empty mask predicted empty: no loss
    assert float(dice_loss(abnormal, target)) == pytest.approx((first + second) / 2, rel=1e-6)


def test_pixel_loss_sums_focal_and_dice_over_taps():
    torch.manual_seed(0)
    taps = [torch.softmax(torch.randn(2, 2, 8, 8), dim=1) for _ in range(3)]
    target = (torch.rand(2, 8, 8) > 0.7).float()
    expected = sum(focal_loss(t, target) + dice_loss(t[:, 1], target) for t in taps)
    torch.testing.assert_close(pixel_loss(taps, target), expected)


def test_lm_loss_is_cross_entropy_on_the_labelled_next_tokens():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0] = torch.tensor([0.0, 2.0, 0.0, 0.0])  # predicts token at position 1
    logits[0, 1] = torch.tensor([1.0, 0.0, 0.0, 3.0])  # predicts token at position 2
    labels = torch.tensor([[IGNORE, 1, 3]])
    first = -math.log(math.exp(2) / (math.exp(2) + 3))
    second = -math.log(math.exp(3) / (math.exp(1) + 2 + math.exp(3)))
    assert float(lm_loss(logits, labels)) == pytest.approx((first + second) / 2, rel=1e-6)
    labels = torch.tensor([[IGNORE, IGNORE, 3]])  # only the answer token counts
    assert float(lm_loss(logits, labels)) == pytest.approx(second, rel=1e-6)


def test_first_answer_labels_keep_only_each_rows_first_answer_token():
    labels = torch.tensor([[IGNORE, IGNORE, 5, 6, 7],
                           [IGNORE, 8, 9, IGNORE, 4],
                           [IGNORE, IGNORE, IGNORE, IGNORE, IGNORE]])
    got = first_answer_labels(labels)
    assert got.tolist() == [[IGNORE, IGNORE, 5, IGNORE, IGNORE],
                            [IGNORE, 8, IGNORE, IGNORE, IGNORE],
                            [IGNORE] * 5]
    # Its cross-entropy is the verdict token's alone: position 1 predicts label 2 in row 0.
    logits = torch.randn(3, 5, 11)
    want = torch.nn.functional.cross_entropy(logits[[0, 1], [1, 0]], torch.tensor([5, 8]))
    assert float(lm_loss(logits, got)) == pytest.approx(float(want), rel=1e-6)


def test_balanced_verdict_loss_weighs_yes_and_no_rows_half_each():
    # Three "No" rows and one "Yes" row; the verdict token sits at position 2 (predicted at 1).
    labels = torch.full((4, 4), IGNORE)
    labels[:, 2] = torch.tensor([7, 7, 7, 3])
    labels[:, 3] = 9  # later answer tokens carry no verdict loss
    logits = torch.randn(4, 4, 11)
    anomalous = torch.tensor([False, False, False, True])
    ce = torch.nn.functional.cross_entropy(logits[:, 1], labels[:, 2], reduction="none")
    want = 0.5 * float(ce[:3].mean()) + 0.5 * float(ce[3])
    assert float(balanced_verdict_loss(logits, labels, anomalous)) == pytest.approx(want, rel=1e-6)
    # One class alone weighs a half; a row without labels is left out.
    labels[3] = IGNORE
    assert float(balanced_verdict_loss(logits, labels, anomalous)) == pytest.approx(
        0.5 * float(ce[:3].mean()), rel=1e-6)
