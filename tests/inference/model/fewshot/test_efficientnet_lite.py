"""EfficientNet-Lite2 from the wheel's state dict: strict loading, ImageNet behaviour, taps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from inference.model.fewshot.efficientnet_lite import (
    LITE_MEAN,
    LITE_STD,
    CnnPatchExtractor,
    EfficientNetLite,
    EfficientNetLiteConfig,
    load_efficientnet_lite,
    same_pad,
)

# ImageNet-1k classes of the two skimage photos (cat: tabby, tiger, Egyptian; espresso).
CATS = {281, 282, 285}
ESPRESSO = 967


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lite2() -> EfficientNetLite:
    return load_efficientnet_lite()


def _photo(array, size: int = 260) -> torch.Tensor:
    pixels = torch.from_numpy(array).permute(2, 0, 1).float()[None] / 255.0
    pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True)
    mean = torch.tensor(LITE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(LITE_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


def test_lite2_classifies_real_photos(lite2: EfficientNetLite) -> None:
    """The weights, layout and preprocessing together reproduce ImageNet behaviour."""
    pixels = torch.cat([_photo(skdata.chelsea()), _photo(skdata.coffee())])
    with torch.no_grad():
        probabilities = lite2(pixels).softmax(dim=-1)
    top = probabilities.argmax(dim=-1).tolist()
    assert top[0] in CATS
    assert top[1] == ESPRESSO
    assert probabilities[0, sorted(CATS)].sum() > 0.5


def test_layout_matches_the_lite2_architecture(lite2: EfficientNetLite) -> None:
    config = lite2.config
    assert len(lite2._blocks) == 21
    assert config.block_strides()[6] == 8  # end of the stride-8 stage
    assert config.block_strides()[14] == 16  # end of the stride-16 stages
    assert config.block_channels()[6] == 48
    assert config.block_channels()[14] == 120


def _saved_state(tmp_path: Path, edit) -> Path:
    model = EfficientNetLite(EfficientNetLiteConfig.tiny())
    state = model.state_dict()
    edit(state)
    path = tmp_path / "tiny.pth"
    torch.save(state, path)
    return path


def test_strict_loading_round_trips(tmp_path: Path) -> None:
    path = _saved_state(tmp_path, lambda state: None)
    loaded = load_efficientnet_lite(path, EfficientNetLiteConfig.tiny())
    saved = torch.load(path, weights_only=True)
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, saved[name])


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    path = _saved_state(tmp_path, lambda state: state.pop("_blocks.1._bn1.running_var"))
    with pytest.raises(ValueError, match=r"_blocks\.1\._bn1\.running_var"):
        load_efficientnet_lite(path, EfficientNetLiteConfig.tiny())


def test_unexpected_tensor_is_named(tmp_path: Path) -> None:
    path = _saved_state(tmp_path, lambda state: state.update(
        {"_blocks.0._se_reduce.weight": torch.zeros(2, 8, 1, 1)}))
    with pytest.raises(ValueError, match=r"_se_reduce"):
        load_efficientnet_lite(path, EfficientNetLiteConfig.tiny())


def test_wrong_shape_is_named(tmp_path: Path) -> None:
    path = _saved_state(tmp_path, lambda state: state.update(
        {"_conv_stem.weight": torch.zeros(8, 3, 5, 5)}))
    with pytest.raises(ValueError, match=r"_conv_stem\.weight"):
        load_efficientnet_lite(path, EfficientNetLiteConfig.tiny())


def test_same_padding_matches_tensorflow() -> None:
    """TF SAME: output ceil(n / s); the odd pixel of padding goes bottom/right."""
    x = torch.arange(16.0).view(1, 1, 4, 4)
    padded = same_pad(x, kernel=3, stride=2)  # total 1: (0 before, 1 after)
    assert padded.shape[-2:] == (5, 5)
    assert torch.equal(padded[..., :4, :4], x)
    assert padded[..., 4, :].abs().sum() == 0
    assert same_pad(x, kernel=3, stride=1).shape[-2:] == (6, 6)


def test_extractor_shapes_on_a_common_grid() -> None:
    model = EfficientNetLite(EfficientNetLiteConfig.tiny()).eval()
    extractor = CnnPatchExtractor(model, (3, 5))  # strides 4 and 8
    assert extractor.stride == 4
    assert len(extractor.blocks) == 5
    with torch.no_grad():
        taps = extractor(torch.randn(2, 3, 64, 48))
    assert extractor.grid(64, 48) == (16, 12)
    assert [t.shape for t in taps] == [(2, 16 * 12, 8), (2, 16 * 12, 16)]


def test_extractor_is_deterministic_and_batch_independent(lite2: EfficientNetLite) -> None:
    extractor = CnnPatchExtractor(lite2, (7, 15)).eval()
    pixels = _photo(skdata.chelsea(), size=112)
    other = _photo(skdata.coffee(), size=112)
    with torch.no_grad():
        first = extractor(pixels)
        second = extractor(pixels)
        batched = extractor(torch.cat([other, pixels]))
    for a, b, c in zip(first, second, batched, strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a[0], c[1], atol=1e-4, rtol=1e-4)


def test_extractor_local_aggregation_is_a_3x3_mean(lite2: EfficientNetLite) -> None:
    plain = CnnPatchExtractor(lite2, (7,), aggregate=1).eval()
    averaged = CnnPatchExtractor(lite2, (7,), aggregate=3).eval()
    pixels = _photo(skdata.chelsea(), size=112)
    with torch.no_grad():
        raw = plain(pixels)[0].view(1, 14, 14, -1)
        mean = averaged(pixels)[0].view(1, 14, 14, -1)
    torch.testing.assert_close(mean[0, 5, 5], raw[0, 4:7, 4:7].mean(dim=(0, 1)))
    torch.testing.assert_close(mean[0, 0, 0], raw[0, :2, :2].mean(dim=(0, 1)))


@pytest.mark.parametrize("taps", [(), (0,), (22,)])
def test_extractor_rejects_bad_taps(lite2: EfficientNetLite, taps: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="tap_blocks"):
        CnnPatchExtractor(lite2, taps)
