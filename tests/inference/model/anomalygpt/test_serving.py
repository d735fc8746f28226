"""Serving forms: LoRA merged into the base weights, FP8 linears (emulated on the CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from inference.model.anomalygpt.model import AnomalyGPTConfig
from inference.model.anomalygpt.serving import FP8, Fp8Linear, merge_lora, quantize_fp8
from inference.model.testing import (
    CLASSES,
    build_random,
    offline_tokenizer,
    random_pixels,
    tiny_llama_config,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def tiny_model():  # noqa: ANN201 - an AnomalyGPT
    tokenizer = offline_tokenizer()
    model = build_random(AnomalyGPTConfig.tiny(), tiny_llama_config(len(tokenizer)), tokenizer,
                         device="cpu", dtype=torch.float32, std=0.2)
    for name, param in model.named_parameters():  # PEFT starts LoRA B at zero: make it count
        if ".lora_B." in name:
            param.data.normal_(0.0, 0.2)
    return model


def test_fp8_linear_is_the_linear_within_e4m3_rounding() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    x = torch.randn(5, 7, 64)
    fp8 = Fp8Linear.from_linear(linear)
    assert fp8.weight_fp8.dtype == FP8
    assert fp8.weight_scale.shape == (1, 32)
    out, exact = fp8(x), linear(x)
    assert out.shape == exact.shape == (5, 7, 32)
    error = (out - exact).norm() / exact.norm()
    assert 0 < error < 0.05  # 3 mantissa bits: a few per cent, not zero (it is quantized)
    # Each weight row's largest magnitude is represented exactly (it maps to the scale).
    row = linear.weight[3]
    k = int(row.abs().argmax())
    restored = fp8.weight_fp8[3, k].float() * fp8.weight_scale[0, 3]
    torch.testing.assert_close(restored, row[k].abs() * row[k].sign(), rtol=1e-6, atol=0)


def test_fp8_linear_refuses_sizes_the_fp8_product_cannot_take() -> None:
    with pytest.raises(ValueError, match="divisible by 16"):
        Fp8Linear.from_linear(nn.Linear(24, 32))


@torch.no_grad()
def test_merged_lora_gives_the_same_verdicts_and_maps() -> None:
    model = tiny_model()
    pixels = random_pixels(3)
    names = list(CLASSES[:3])
    before = model.verdicts(pixels, names, explain="none")
    assert merge_lora(model)
    assert not any(".lora_" in name for name, _ in model.named_parameters())
    after = model.verdicts(pixels, names, explain="none")
    for a, b in zip(before, after, strict=True):
        assert a.probability == pytest.approx(b.probability, abs=1e-5)
        torch.testing.assert_close(a.anomaly_map, b.anomaly_map)
    assert not merge_lora(model)  # nothing left to merge


@torch.no_grad()
def test_fp8_model_replaces_the_decoder_and_vision_linears_and_stays_close() -> None:
    model = tiny_model()
    pixels = random_pixels(4)
    names = list(CLASSES[:4])
    exact = model.verdicts(pixels, names, explain="none")
    counts = quantize_fp8(model)
    assert counts == {"llm": 2 * 7, "vision": 4 * 4}  # q k v o gate up down; qkv out fc1 fc2
    fp8 = model.verdicts(pixels, names, explain="none")
    for a, b in zip(exact, fp8, strict=True):
        assert abs(a.probability - b.probability) < 0.05
        pair = torch.stack([a.anomaly_map.flatten(), b.anomaly_map.flatten()])
        assert torch.corrcoef(pair)[0, 1] > 0.95  # the zero-shot map's softmax amplifies noise
    assert [a.probability for a in exact] != [b.probability for b in fp8]  # it did change
