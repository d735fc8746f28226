"""ImageBind vision and text encoders (batch-first), loading the official multimodal weights.

Follows facebookresearch/ImageBind (`imagebind/models/imagebind_model.py`, `transformer.py`,
`multimodal_preprocessors.py`, `helpers.py`): pre-norm blocks with `nn.MultiheadAttention`'s
packed in-projection (no `add_bias_kv` for vision or text), every LayerNorm eps 1e-6, GELU MLP.
The official trunks run sequence-first; here tokens stay [B, L, C], which changes no weight.

- Vision: the image is repeated into 2 frames and patchified by a Conv3d (2, 14, 14) without
  bias, a CLS token and a learned position table [1, 257, C] are added, a LayerNorm runs before
  the blocks; head: LayerNorm, CLS, Linear without bias; then L2 normalisation.
- Text: token + position embeddings, causal mask, blocks (no LayerNorm before them); head:
  feature at argmax(ids) (the first end-of-text token), LayerNorm, Linear without bias; then L2
  normalisation. The official postprocessor also multiplies by
  `min(exp(log_logit_scale), 100)`; `encode_text` does not, `text_logit_scale()` returns it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from .clip_tokenizer import tokenize
from .image_encoder import ImageFeatures

__all__ = ["ImageBindConfig", "ImageBindEncoder", "ImageFeatures", "tokenize"]

_LN_EPS = 1e-6
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_MAX_LOGIT_SCALE = 100.0  # LearnableLogitScaling(max_logit_scale=100)
# The official flat state_dict groups each modality under these four module dicts.
_GROUPS = (
    "modality_preprocessors",
    "modality_trunks",
    "modality_heads",
    "modality_postprocessors",
)


@dataclass(frozen=True)
class ImageBindConfig:
    """ImageBind sizes. `tap_layers` are 0-based indices of vision blocks whose outputs are kept."""

    vision_width: int
    vision_layers: int
    vision_heads: int
    text_width: int
    text_layers: int
    text_heads: int
    embed_dim: int
    tap_layers: tuple[int, ...]
    image_size: int = 224
    patch_size: int = 14
    kernel_frames: int = 2  # the image is repeated into this many frames; Conv3d kernel depth
    context_length: int = 77
    vocab_size: int = 49408
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        if self.vision_width % self.vision_heads or self.text_width % self.text_heads:
            msg = "vision_width/text_width must be divisible by vision_heads/text_heads"
            raise ValueError(msg)
        if self.image_size % self.patch_size:
            msg = f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            raise ValueError(msg)
        bad = [t for t in self.tap_layers if not 0 <= t < self.vision_layers]
        if bad:
            msg = f"tap_layers {bad} outside the {self.vision_layers} vision blocks"
            raise ValueError(msg)

    @property
    def num_patches(self) -> int:
        """Patches per image (256 for 224 px, patch 14)."""
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def huge(cls) -> ImageBindConfig:
        """ImageBind-Huge (`imagebind_huge()`): taps after blocks 8, 16, 24 and 32."""
        return cls(
            vision_width=1280,
            vision_layers=32,
            vision_heads=16,
            text_width=1024,
            text_layers=24,
            text_heads=16,
            embed_dim=1024,
            tap_layers=(7, 15, 23, 31),
        )

    @classmethod
    def tiny(cls) -> ImageBindConfig:
        """A random-weight size for shape and format tests."""
        return cls(
            vision_width=64,
            vision_layers=4,
            vision_heads=4,
            text_width=32,
            text_layers=2,
            text_heads=2,
            embed_dim=16,
            tap_layers=(0, 1, 2, 3),
        )


class _SelfAttention(nn.Module):
    """Multi-head self-attention with `nn.MultiheadAttention`'s parameter layout."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))  # q, k, v stacked
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        batch, length, width = x.shape
        fp8 = getattr(self, "in_proj_fp8", None)  # set by `serving.quantize_fp8`
        qkv = fp8(x) if fp8 is not None else F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class _Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    """Pre-norm transformer block (official `BlockWithMasking`, no layer scale, no drop path)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm_1 = nn.LayerNorm(width, eps=_LN_EPS)
        self.attn = _SelfAttention(width, heads)
        self.norm_2 = nn.LayerNorm(width, eps=_LN_EPS)
        self.mlp = _Mlp(width, width * mlp_ratio)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm_1(x), mask)
        return x + self.mlp(self.norm_2(x))


class _VisionTower(nn.Module):
    def __init__(self, c: ImageBindConfig) -> None:
        super().__init__()
        width = c.vision_width
        kernel = (c.kernel_frames, c.patch_size, c.patch_size)
        self.patch_embed = nn.Conv3d(3, width, kernel_size=kernel, stride=kernel, bias=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + c.num_patches, width))
        self.pre_norm = nn.LayerNorm(width, eps=_LN_EPS)
        self.blocks = nn.ModuleList(
            _Block(width, c.vision_heads, c.mlp_ratio) for _ in range(c.vision_layers)
        )
        self.head_norm = nn.LayerNorm(width, eps=_LN_EPS)
        self.head_proj = nn.Linear(width, c.embed_dim, bias=False)
        nn.init.normal_(self.cls_token, std=width**-0.5)
        nn.init.normal_(self.pos_embed, std=width**-0.5)


class _TextTower(nn.Module):
    def __init__(self, c: ImageBindConfig) -> None:
        super().__init__()
        width = c.text_width
        self.token_embedding = nn.Embedding(c.vocab_size, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, c.context_length, width))
        # Additive mask, -inf above the diagonal (official `build_causal_attention_mask`).
        causal = torch.full((c.context_length, c.context_length), float("-inf")).triu_(1)
        self.register_buffer("causal_mask", causal)
        self.blocks = nn.ModuleList(
            _Block(width, c.text_heads, c.mlp_ratio) for _ in range(c.text_layers)
        )
        self.head_norm = nn.LayerNorm(width, eps=_LN_EPS)
        self.head_proj = nn.Linear(width, c.embed_dim, bias=False)
        self.log_logit_scale = nn.Parameter(torch.tensor(1 / 0.07).log())
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)


def _block_names(official: str, ours: str, layers: int) -> dict[str, str]:
    """Official -> our names for every tensor of `layers` transformer blocks."""
    names = {}
    for i in range(layers):
        src, dst = f"{official}.blocks.{i}", f"{ours}.blocks.{i}"
        for leaf in (
            "attn.in_proj_weight",
            "attn.in_proj_bias",
            "attn.out_proj.weight",
            "attn.out_proj.bias",
            "norm_1.weight",
            "norm_1.bias",
            "norm_2.weight",
            "norm_2.bias",
            "mlp.fc1.weight",
            "mlp.fc1.bias",
            "mlp.fc2.weight",
            "mlp.fc2.bias",
        ):
            names[f"{src}.{leaf}"] = f"{dst}.{leaf}"
    return names


def official_name_map(config: ImageBindConfig) -> dict[str, str]:
    """Official flat key -> this module's parameter/buffer name, for vision and text.

    Every parameter and buffer of `ImageBindEncoder` appears exactly once.
    """
    pre, trunk, head = "modality_preprocessors", "modality_trunks", "modality_heads"
    names = {
        f"{pre}.vision.rgbt_stem.proj.1.weight": "vision.patch_embed.weight",  # proj.0: PadIm2Video
        f"{pre}.vision.cls_token": "vision.cls_token",
        f"{pre}.vision.pos_embedding_helper.pos_embed": "vision.pos_embed",
        f"{trunk}.vision.pre_transformer_layer.0.weight": "vision.pre_norm.weight",
        f"{trunk}.vision.pre_transformer_layer.0.bias": "vision.pre_norm.bias",
        **_block_names(f"{trunk}.vision", "vision", config.vision_layers),
        f"{head}.vision.0.weight": "vision.head_norm.weight",  # .1 is SelectElement(0)
        f"{head}.vision.0.bias": "vision.head_norm.bias",
        f"{head}.vision.2.weight": "vision.head_proj.weight",
        f"{pre}.text.token_embedding.weight": "text.token_embedding.weight",
        f"{pre}.text.pos_embed": "text.pos_embed",
        f"{pre}.text.mask": "text.causal_mask",
        # Text trunk: pre_transformer_layer.0 is nn.Identity, so no tensor.
        **_block_names(f"{trunk}.text", "text", config.text_layers),
        f"{head}.text.proj.0.weight": "text.head_norm.weight",
        f"{head}.text.proj.0.bias": "text.head_norm.bias",
        f"{head}.text.proj.1.weight": "text.head_proj.weight",
        "modality_postprocessors.text.1.log_logit_scale": "text.log_logit_scale",
    }
    return names


class ImageBindEncoder(nn.Module):
    """Frozen-use ImageBind image and text encoders.

    Args:
        config: sizes; `ImageBindConfig.huge()` for the released checkpoint. Build under
            `torch.device(...)` (or `meta` then `to_empty`) to place weights before loading.
    """

    def __init__(self, config: ImageBindConfig) -> None:
        super().__init__()
        self.config = config
        self.vision = _VisionTower(config)
        self.text = _TextTower(config)

    # `image_encoder.ImageEncoder` attributes.
    mean = CLIP_MEAN
    std = CLIP_STD
    supports_text = True

    @property
    def vision_width(self) -> int:
        """Tap width."""
        return self.config.vision_width

    @property
    def embed_dim(self) -> int:
        """Global (joint) embedding width."""
        return self.config.embed_dim

    @property
    def num_taps(self) -> int:
        """Number of tapped blocks."""
        return len(self.config.tap_layers)

    @property
    def image_size(self) -> int:
        """Input size in pixels."""
        return self.config.image_size

    @property
    def patch_size(self) -> int:
        """Patch size in pixels."""
        return self.config.patch_size

    @torch.no_grad()
    def load_official(self, state_dict: Mapping[str, Tensor]) -> None:
        """Copies the vision and text tensors of an official flat ImageBind state_dict in place.

        Keys of other modalities (audio, depth, thermal, imu) are ignored. Tensors are copied
        into this module's existing storage, keeping its dtype and device.

        Raises:
            ValueError: naming every missing, mis-shaped or unexpected vision/text key; nothing
                is copied then.
        """
        names = official_name_map(self.config)
        targets = dict(self.named_parameters()) | dict(self.named_buffers())
        problems = [f"missing {key}" for key in names if key not in state_dict]
        for key, value in state_dict.items():
            if not any(key.startswith(f"{g}.{m}.") for g in _GROUPS for m in ("vision", "text")):
                continue
            if key not in names:
                problems.append(f"unexpected {key}")
                continue
            want = targets[names[key]].shape
            if tuple(value.shape) != tuple(want):
                problems.append(f"mis-shaped {key}: {tuple(value.shape)}, expected {tuple(want)}")
        if problems:
            msg = "official ImageBind state_dict does not fit: " + "; ".join(problems)
            raise ValueError(msg)
        for key, name in names.items():
            targets[name].copy_(state_dict[key])

    def encode_image(self, pixels: Tensor) -> ImageFeatures:
        """Global embedding and tapped block outputs of CLIP-normalised images.

        Args:
            pixels: [B, 3, image_size, image_size], CLIP mean/std normalised.

        Returns:
            `ImageFeatures`: global [B, embed_dim] unit-norm; taps, one per `tap_layers`
            entry, raw block outputs [B, 1 + num_patches, vision_width] with CLS at index 0.
        """
        c, v = self.config, self.vision
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, c.image_size, c.image_size):
            size = c.image_size
            msg = f"pixels must be [B, 3, {size}, {size}], got {tuple(pixels.shape)}"
            raise ValueError(msg)
        weight = v.patch_embed.weight
        frames = pixels.to(weight.dtype).unsqueeze(2).expand(-1, -1, c.kernel_frames, -1, -1)
        x = v.patch_embed(frames).flatten(2).transpose(1, 2)  # [B, num_patches, C]
        x = torch.cat([v.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + v.pos_embed
        x = v.pre_norm(x)
        taps = []
        for index, block in enumerate(v.blocks):
            x = block(x)
            if index in c.tap_layers:
                taps.append(x)
        embedding = v.head_proj(v.head_norm(x[:, 0]))
        return ImageFeatures(F.normalize(embedding, dim=-1), taps)

    def encode_text(self, ids: Tensor) -> Tensor:
        """Unit-norm text embeddings [B, embed_dim] of token ids [B, context_length].

        The official output is this times `text_logit_scale()`.
        """
        t = self.text
        if ids.ndim != 2 or ids.shape[1] != self.config.context_length:
            msg = f"ids must be [B, {self.config.context_length}], got {tuple(ids.shape)}"
            raise ValueError(msg)
        x = t.token_embedding(ids) + t.pos_embed
        mask = t.causal_mask.to(x.dtype)
        for block in t.blocks:
            x = block(x, mask)
        eos = x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]  # [B, C]
        return F.normalize(t.head_proj(t.head_norm(eos)), dim=-1)

    def text_logit_scale(self) -> Tensor:
        """The official text postprocessor's factor, `min(exp(log_logit_scale), 100)`."""
        return self.text.log_logit_scale.exp().clamp(max=_MAX_LOGIT_SCALE)
