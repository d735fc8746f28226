"""ImageBind encoder: official state_dict loading and parity with a sequence-first reference."""

from __future__ import annotations

import pytest
import torch

from inference.model.anomalygpt.imagebind import (
    ImageBindConfig,
    ImageBindEncoder,
    official_name_map,
    tokenize,
)
from tests.inference.model.anomalygpt.imagebind_reference import (
    official_shapes,
    official_state_dict,
    other_modality_keys,
    reference_encode_image,
    reference_encode_text,
)

ATOL = 1e-5
TINY = ImageBindConfig.tiny()


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def source() -> dict[str, torch.Tensor]:
    return official_state_dict(TINY, seed=0)


@pytest.fixture(scope="module")
def encoder(source: dict[str, torch.Tensor]) -> ImageBindEncoder:
    model = ImageBindEncoder(TINY).eval()
    model.load_official(source)
    return model


def test_load_copies_every_vision_and_text_tensor(
    encoder: ImageBindEncoder, source: dict[str, torch.Tensor]
) -> None:
    targets = dict(encoder.named_parameters()) | dict(encoder.named_buffers())
    names = official_name_map(TINY)
    assert set(names) == set(official_shapes(TINY))
    assert sorted(names.values()) == sorted(targets)  # every tensor of ours is loaded, once
    for key, name in names.items():
        assert torch.equal(targets[name], source[key]), key


def test_load_into_meta_built_module_keeps_target_dtype(source: dict[str, torch.Tensor]) -> None:
    with torch.device("meta"):
        model = ImageBindEncoder(TINY)
    model.to_empty(device="cpu").to(torch.float64)
    model.load_official(source)
    weight = model.vision.blocks[2].attn.in_proj_weight
    assert weight.dtype == torch.float64
    expected = source["modality_trunks.vision.blocks.2.attn.in_proj_weight"].double()
    assert torch.equal(weight, expected)
    assert torch.isinf(model.text.causal_mask).sum() == 77 * 76 // 2


def test_other_modalities_are_ignored(source: dict[str, torch.Tensor]) -> None:
    assert set(other_modality_keys()) <= set(source)
    ImageBindEncoder(TINY).load_official(source)  # does not raise


@pytest.mark.parametrize(
    "key",
    [
        "modality_trunks.vision.blocks.3.mlp.fc2.bias",
        "modality_preprocessors.text.mask",
        "modality_postprocessors.text.1.log_logit_scale",
        "modality_heads.vision.2.weight",
    ],
)
def test_missing_key_is_named(source: dict[str, torch.Tensor], key: str) -> None:
    dropped = {key, "modality_heads.text.proj.1.weight"}
    broken = {k: v for k, v in source.items() if k not in dropped}
    model = ImageBindEncoder(TINY)
    before = model.vision.cls_token.clone()
    with pytest.raises(ValueError, match=r"missing") as info:
        model.load_official(broken)
    assert key in str(info.value)
    assert "modality_heads.text.proj.1.weight" in str(info.value)
    assert torch.equal(model.vision.cls_token, before)  # nothing copied on failure


def test_misshaped_key_is_named(source: dict[str, torch.Tensor]) -> None:
    broken = dict(source)
    broken["modality_preprocessors.vision.pos_embedding_helper.pos_embed"] = torch.zeros(1, 50, 64)
    broken["modality_trunks.text.blocks.1.attn.in_proj_weight"] = torch.zeros(32, 32)
    with pytest.raises(ValueError, match="mis-shaped") as info:
        ImageBindEncoder(TINY).load_official(broken)
    message = str(info.value)
    assert "modality_preprocessors.vision.pos_embedding_helper.pos_embed" in message
    assert "modality_trunks.text.blocks.1.attn.in_proj_weight" in message


@pytest.mark.parametrize(
    "key",
    [
        "modality_trunks.vision.blocks.4.norm_1.weight",  # beyond vision_layers
        "modality_trunks.text.blocks.0.attn.bias_k",  # add_bias_kv is off for text
        "modality_heads.vision.3.weight",
    ],
)
def test_unexpected_key_is_named(source: dict[str, torch.Tensor], key: str) -> None:
    broken = {**source, key: torch.zeros(64)}
    with pytest.raises(ValueError, match="unexpected") as info:
        ImageBindEncoder(TINY).load_official(broken)
    assert key in str(info.value)


def test_image_parity_with_official_layout(
    encoder: ImageBindEncoder, source: dict[str, torch.Tensor]
) -> None:
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = encoder.encode_image(pixels)
    expected_global, block_outputs = reference_encode_image(source, TINY, pixels)
    assert ours.global_embedding.shape == (2, TINY.embed_dim)
    torch.testing.assert_close(ours.global_embedding, expected_global, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours.global_embedding.norm(dim=-1), torch.ones(2))
    assert len(ours.taps) == len(TINY.tap_layers)
    for tap, layer in zip(ours.taps, TINY.tap_layers, strict=True):
        assert tap.shape == (2, 257, TINY.vision_width)
        expected = block_outputs[layer].permute(1, 0, 2)  # [L, B, C] -> [B, L, C]
        torch.testing.assert_close(tap, expected, atol=ATOL, rtol=0)


def test_tap_selection_follows_config(source: dict[str, torch.Tensor]) -> None:
    config = ImageBindConfig(**{**TINY.__dict__, "tap_layers": (1, 3)})
    model = ImageBindEncoder(config).eval()
    model.load_official(source)
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        taps = model.encode_image(pixels).taps
    _, block_outputs = reference_encode_image(source, config, pixels)
    assert len(taps) == 2
    torch.testing.assert_close(taps[0], block_outputs[1].permute(1, 0, 2), atol=ATOL, rtol=0)
    torch.testing.assert_close(taps[1], block_outputs[3].permute(1, 0, 2), atol=ATOL, rtol=0)


def test_text_parity_with_official_layout(
    encoder: ImageBindEncoder, source: dict[str, torch.Tensor]
) -> None:
    ids = tokenize(["a photo of a damaged bottle.", "", "screw " * 90])
    with torch.no_grad():
        ours = encoder.encode_text(ids)
        scaled = ours * encoder.text_logit_scale()
    expected = reference_encode_text(source, TINY, ids)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(3))
    unit = expected / expected.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(ours, unit, atol=ATOL, rtol=0)
    torch.testing.assert_close(scaled, expected, atol=ATOL * 15, rtol=0)  # scale 1/0.07


def test_logit_scale_is_clamped_at_100(source: dict[str, torch.Tensor]) -> None:
    model = ImageBindEncoder(TINY)
    key = "modality_postprocessors.text.1.log_logit_scale"
    model.load_official({**source, key: torch.tensor(6.0)})
    assert model.text_logit_scale().item() == pytest.approx(100.0)


def test_input_shapes_are_checked(encoder: ImageBindEncoder) -> None:
    with pytest.raises(ValueError, match="pixels"):
        encoder.encode_image(torch.zeros(1, 3, 112, 112))
    with pytest.raises(ValueError, match="ids"):
        encoder.encode_text(torch.zeros(1, 10, dtype=torch.long))


def test_config_rejects_taps_outside_trunk() -> None:
    with pytest.raises(ValueError, match="tap_layers"):
        ImageBindConfig(**{**TINY.__dict__, "tap_layers": (4,)})


def test_huge_parameter_counts_match_official_shapes() -> None:
    config = ImageBindConfig.huge()
    with torch.device("meta"):
        model = ImageBindEncoder(config)
    shapes = official_shapes(config)

    def official_count(modality: str) -> int:
        return sum(
            torch.Size(shape).numel()
            for key, shape in shapes.items()
            if f".{modality}." in key and not key.endswith(".mask")
        )

    vision = sum(p.numel() for p in model.vision.parameters())
    text = sum(p.numel() for p in model.text.parameters())
    # Vision, W = 1280: 32 blocks x (12 W^2 + 13 W) = 629,678,080; Conv3d 1280*3*2*14*14 =
    # 1,505,280; cls 1,280; pos 257*1280 = 328,960; two LayerNorms 5,120; head 1280*1024.
    assert vision == official_count("vision") == 632_829_440
    # Text, W = 1024: 24 x (12 W^2 + 13 W) = 302,309,376; tokens 49408*1024 = 50,593,792;
    # pos 77*1024 = 78,848; head LayerNorm 2,048 + Linear 1,048,576; logit scale 1.
    assert text == official_count("text") == 354_032_641
    assert model.vision.pos_embed.shape == (1, 257, 1280)
    assert model.vision.blocks[31].attn.in_proj_weight.shape == (3840, 1280)
