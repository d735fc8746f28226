"""Independent ImageBind reference for parity tests, in the official sequence-first layout.

Written from facebookresearch/ImageBind (imagebind_model.py, transformer.py,
multimodal_preprocessors.py, helpers.py at 53680b0), not from
`inference.model.anomalygpt.imagebind`: it reads the official flat state_dict directly and runs
the trunks as [L, B, C] through `torch.nn.MultiheadAttention`, as the official
`MultiheadAttention(nn.MultiheadAttention)` does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from inference.model.anomalygpt.imagebind import ImageBindConfig

BLOCK_LEAVES = {  # leaf -> shape as a function of width
    "attn.in_proj_weight": lambda w: (3 * w, w),
    "attn.in_proj_bias": lambda w: (3 * w,),
    "attn.out_proj.weight": lambda w: (w, w),
    "attn.out_proj.bias": lambda w: (w,),
    "norm_1.weight": lambda w: (w,),
    "norm_1.bias": lambda w: (w,),
    "norm_2.weight": lambda w: (w,),
    "norm_2.bias": lambda w: (w,),
    "mlp.fc1.weight": lambda w: (4 * w, w),
    "mlp.fc1.bias": lambda w: (4 * w,),
    "mlp.fc2.weight": lambda w: (w, 4 * w),
    "mlp.fc2.bias": lambda w: (w,),
}


def official_shapes(c: ImageBindConfig) -> dict[str, tuple[int, ...]]:
    """Vision and text keys of the official ImageBindModel state_dict with their shapes."""
    vw, tw = c.vision_width, c.text_width
    p = c.patch_size
    tokens = 1 + (c.image_size // p) ** 2
    shapes: dict[str, tuple[int, ...]] = {
        # rgbt_stem.proj = Sequential(PadIm2Video, Conv3d(bias=False))
        "modality_preprocessors.vision.rgbt_stem.proj.1.weight": (vw, 3, c.kernel_frames, p, p),
        "modality_preprocessors.vision.cls_token": (1, 1, vw),
        "modality_preprocessors.vision.pos_embedding_helper.pos_embed": (1, tokens, vw),
        # pre_transformer_layer = Sequential(LayerNorm(eps=1e-6), EinOpsRearrange)
        "modality_trunks.vision.pre_transformer_layer.0.weight": (vw,),
        "modality_trunks.vision.pre_transformer_layer.0.bias": (vw,),
        # heads.vision = Sequential(LayerNorm, SelectElement(0), Linear(bias=False))
        "modality_heads.vision.0.weight": (vw,),
        "modality_heads.vision.0.bias": (vw,),
        "modality_heads.vision.2.weight": (c.embed_dim, vw),
        "modality_preprocessors.text.token_embedding.weight": (c.vocab_size, tw),
        "modality_preprocessors.text.pos_embed": (1, c.context_length, tw),
        "modality_preprocessors.text.mask": (c.context_length, c.context_length),
        # heads.text = SelectEOSAndProject(proj=Sequential(LayerNorm, Linear(bias=False)))
        "modality_heads.text.proj.0.weight": (tw,),
        "modality_heads.text.proj.0.bias": (tw,),
        "modality_heads.text.proj.1.weight": (c.embed_dim, tw),
        # postprocessors.text = Sequential(Normalize, LearnableLogitScaling(learnable=True))
        "modality_postprocessors.text.1.log_logit_scale": (),
    }
    for modality, width, layers in (("vision", vw, c.vision_layers), ("text", tw, c.text_layers)):
        for i in range(layers):
            for leaf, shape in BLOCK_LEAVES.items():
                shapes[f"modality_trunks.{modality}.blocks.{i}.{leaf}"] = shape(width)
    return shapes


def other_modality_keys() -> dict[str, tuple[int, ...]]:
    """A few audio/depth/thermal/imu tensors (tiny shapes) that a loader must ignore."""
    return {
        "modality_preprocessors.audio.rgbt_stem.proj.weight": (8, 1, 16, 16),
        "modality_preprocessors.audio.rgbt_stem.norm_layer.weight": (8,),
        "modality_trunks.audio.blocks.0.attn.bias_k": (1, 1, 8),
        "modality_trunks.audio.blocks.0.attn.bias_v": (1, 1, 8),
        "modality_heads.depth.2.weight": (4, 8),
        "modality_postprocessors.audio.1.log_logit_scale": (),
        "modality_trunks.thermal.blocks.0.norm_1.weight": (8,),
        "modality_preprocessors.imu.pos_embed": (1, 251, 8),
    }


def official_state_dict(c: ImageBindConfig, *, seed: int = 0) -> dict[str, Tensor]:
    """Random official-layout tensors for `c`, plus other modalities' keys."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for key, shape in {**official_shapes(c), **other_modality_keys()}.items():
        value = torch.randn(shape, generator=gen) * 0.1
        if key.endswith(("norm_1.weight", "norm_2.weight", ".0.weight")) and len(shape) == 1:
            value = value + 1.0  # LayerNorm gains near 1
        out[key] = value
    out["modality_preprocessors.text.mask"] = torch.full(
        (c.context_length, c.context_length), float("-inf")
    ).triu(1)
    out["modality_postprocessors.text.1.log_logit_scale"] = torch.tensor(1 / 0.07).log()
    return out


def _mha(sd: Mapping[str, Tensor], prefix: str, width: int, heads: int) -> nn.MultiheadAttention:
    attn = nn.MultiheadAttention(width, heads, bias=True, add_bias_kv=False)
    attn.load_state_dict(
        {
            "in_proj_weight": sd[f"{prefix}.in_proj_weight"],
            "in_proj_bias": sd[f"{prefix}.in_proj_bias"],
            "out_proj.weight": sd[f"{prefix}.out_proj.weight"],
            "out_proj.bias": sd[f"{prefix}.out_proj.bias"],
        }
    )
    return attn.eval()


def _ln(x: Tensor, sd: Mapping[str, Tensor], prefix: str) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps=1e-6)


def _run_blocks(
    x: Tensor, sd: Mapping[str, Tensor], trunk: str, layers: int, heads: int, mask: Tensor | None
) -> list[Tensor]:
    """BlockWithMasking on [L, B, C]; returns every block output (sequence-first)."""
    outs = []
    for i in range(layers):
        p = f"{trunk}.blocks.{i}"
        attn = _mha(sd, f"{p}.attn", x.shape[-1], heads)
        h = _ln(x, sd, f"{p}.norm_1")
        x = x + attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        h = _ln(x, sd, f"{p}.norm_2")
        h = F.gelu(F.linear(h, sd[f"{p}.mlp.fc1.weight"], sd[f"{p}.mlp.fc1.bias"]))
        x = x + F.linear(h, sd[f"{p}.mlp.fc2.weight"], sd[f"{p}.mlp.fc2.bias"])
        outs.append(x)
    return outs


@torch.no_grad()
def reference_encode_image(
    sd: Mapping[str, Tensor], c: ImageBindConfig, pixels: Tensor
) -> tuple[Tensor, list[Tensor]]:
    """Official vision path: (postprocessed embedding [B, E], block outputs [L, B, C] each)."""
    video = pixels.unsqueeze(2).repeat(1, 1, 2, 1, 1)  # PadIm2Video(pad_type="repeat", ntimes=2)
    weight = sd["modality_preprocessors.vision.rgbt_stem.proj.1.weight"]
    tokens = F.conv3d(video, weight, stride=weight.shape[2:]).flatten(2).transpose(1, 2)
    cls = sd["modality_preprocessors.vision.cls_token"].expand(tokens.shape[0], -1, -1)
    tokens = torch.cat((cls, tokens), dim=1)
    tokens = tokens + sd["modality_preprocessors.vision.pos_embedding_helper.pos_embed"]
    tokens = _ln(tokens, sd, "modality_trunks.vision.pre_transformer_layer.0")
    trunk = "modality_trunks.vision"
    outs = _run_blocks(tokens.permute(1, 0, 2), sd, trunk, c.vision_layers, c.vision_heads, None)
    final = _ln(outs[-1].permute(1, 0, 2), sd, "modality_heads.vision.0")[:, 0]
    embedding = F.linear(final, sd["modality_heads.vision.2.weight"])
    return F.normalize(embedding, dim=-1), outs


@torch.no_grad()
def reference_encode_text(sd: Mapping[str, Tensor], c: ImageBindConfig, ids: Tensor) -> Tensor:
    """Official text path including LearnableLogitScaling: [B, E]."""
    x = F.embedding(ids, sd["modality_preprocessors.text.token_embedding.weight"])
    x = x + sd["modality_preprocessors.text.pos_embed"]
    mask = sd["modality_preprocessors.text.mask"]
    x = _run_blocks(
        x.permute(1, 0, 2), sd, "modality_trunks.text", c.text_layers, c.text_heads, mask
    )[-1].permute(1, 0, 2)
    x = x[torch.arange(x.shape[0]), ids.argmax(dim=-1)]
    x = _ln(x, sd, "modality_heads.text.proj.0")
    x = F.normalize(F.linear(x, sd["modality_heads.text.proj.1.weight"]), dim=-1)
    scale = sd["modality_postprocessors.text.1.log_logit_scale"].exp().clamp(max=100)
    return scale * x
