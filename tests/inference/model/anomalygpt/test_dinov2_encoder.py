"""The DINOv2-S adapter of AnomalyGPT's encoder protocol, on the real converted backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from transformers import Dinov2Model

from inference.model.anomalygpt.dinov2_encoder import DEFAULT_TAPS, Dinov2Encoder
from inference.model.anomalygpt.image_encoder import ImageEncoder, ZeroShotUnavailableError
from inference.model.anomalygpt.imagebind import ImageBindConfig, ImageBindEncoder
from inference.model.fewshot.dinov2 import IMAGENET_MEAN, IMAGENET_STD, PatchFeatureExtractor

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backbone(model_cache_dir: Path) -> Dinov2Model:
    from inference.model.fewshot.dinov2 import load_dinov2_small

    return load_dinov2_small(model_cache_dir)


def test_both_encoders_satisfy_the_protocol(backbone):
    dino = Dinov2Encoder(backbone)
    imagebind = ImageBindEncoder(ImageBindConfig.tiny())
    assert isinstance(dino, ImageEncoder)
    assert isinstance(imagebind, ImageEncoder)
    assert (dino.vision_width, dino.embed_dim, dino.num_taps) == (384, 384, 4)
    assert (dino.image_size, dino.patch_size, dino.supports_text) == (224, 14, False)
    assert (dino.mean, dino.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert (imagebind.vision_width, imagebind.embed_dim, imagebind.num_taps) == (64, 16, 4)
    assert imagebind.supports_text


def test_taps_keep_cls_and_equal_the_extractor_patch_tokens(backbone):
    fired: list[int] = []
    hooks = [backbone.encoder.layer[n - 1].register_forward_hook(
        lambda *_, n=n: fired.append(n)) for n in (10, 11, 12)]
    try:
        encoder = Dinov2Encoder(backbone, DEFAULT_TAPS).eval()
        pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            features = encoder.encode_image(pixels)
            patches = PatchFeatureExtractor(backbone, DEFAULT_TAPS)(pixels)
            cls = backbone(pixels, output_hidden_states=True).hidden_states
    finally:
        for hook in hooks:
            hook.remove()
    assert fired == [10, 11, 12]  # only the full model's pass above ran them
    assert [tuple(t.shape) for t in features.taps] == [(2, 257, 384)] * 4
    for tap, patch, number in zip(features.taps, patches, DEFAULT_TAPS, strict=True):
        torch.testing.assert_close(tap[:, 1:], patch)
        torch.testing.assert_close(tap[:, 0], cls[number][:, 0])  # CLS at index 0
    assert tuple(features.global_embedding.shape) == (2, 384)
    torch.testing.assert_close(features.global_embedding,
                               F.normalize(features.taps[-1][:, 0], dim=-1))
    torch.testing.assert_close(features.global_embedding.norm(dim=-1), torch.ones(2))


def test_blocks_after_the_last_tap_never_run(backbone):
    encoder = Dinov2Encoder(backbone, (2, 4))
    assert len(encoder.blocks) == 4
    with torch.no_grad():
        features = encoder.encode_image(torch.zeros(1, 3, 224, 224))
    assert len(features.taps) == 2


def test_zero_shot_is_refused_with_a_clear_message(backbone):
    encoder = Dinov2Encoder(backbone)
    with pytest.raises(ZeroShotUnavailableError, match="text-aligned encoder such as ImageBind"):
        encoder.encode_text(torch.zeros(1, 77, dtype=torch.long))
    assert issubclass(ZeroShotUnavailableError, ValueError)


@pytest.mark.parametrize("taps", [(), (5, 3), (3, 3), (0, 2), (13,)])
def test_bad_taps_and_sizes_are_rejected(backbone, taps):
    with pytest.raises(ValueError, match="tap_layers"):
        Dinov2Encoder(backbone, taps)
    with pytest.raises(ValueError, match="multiple of 14"):
        Dinov2Encoder(backbone, image_size=230)
    with pytest.raises(ValueError, match=r"\[B, 3, 224, 224\]"):
        Dinov2Encoder(backbone).encode_image(torch.zeros(1, 3, 448, 448))
