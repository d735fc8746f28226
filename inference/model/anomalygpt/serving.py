"""Serving-time forms of a loaded AnomalyGPT: LoRA merged into its base weights, FP8 linears.

Both are applied after loading, in place, for inference only (a merged or quantized model is
not trained or saved further):

- `merge_lora`: adds each LoRA product into its base weight (PEFT's `merge_and_unload`), so a
  prefill runs one matrix product per projection instead of three plus an add. The same
  function up to the rounding of the merged weights.
- `quantize_fp8`: replaces the linear layers of the LM's decoder and the ImageBind vision
  trunk by `Fp8Linear`: weights in float8 e4m3 with one scale per output row, activations
  scaled per row at run time, products by `torch._scaled_mm` (Hopper and newer GPUs; on other
  devices the same arithmetic is emulated in float32, for tests). Roughly twice the matrix
  rate of bf16 on an H100/H200; the verdicts move by the rounding of 3-bit mantissas, so it is
  an opt-in whose agreement with bf16 `agpt bench model --random-weights` reports.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite e4m3 value


def _row_scale(x: Tensor) -> Tensor:
    """[R, 1] float32 scales mapping each row's largest magnitude to FP8_MAX."""
    return x.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX


def _to_fp8(x: Tensor) -> Tensor:
    """Saturating cast (a plain cast turns values past the largest e4m3 number into NaN)."""
    return x.clamp(-FP8_MAX, FP8_MAX).to(FP8)


class Fp8Linear(nn.Module):
    """`nn.Linear` with row-scaled float8 e4m3 weights and per-row (per-token) activation scales.

    Args:
        weight: [out, in] weight of the layer it replaces; `in` and `out` multiples of 16.
        bias: [out] or None.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        out_features, in_features = weight.shape
        if in_features % 16 or out_features % 16:
            msg = f"FP8 products need sizes divisible by 16, got {out_features}x{in_features}"
            raise ValueError(msg)
        scale = _row_scale(weight.detach())
        self.register_buffer("weight_fp8", _to_fp8(weight.detach().float() / scale))
        self.register_buffer("weight_scale", scale.reshape(1, -1).contiguous())  # [1, out]
        self.bias = None if bias is None else nn.Parameter(bias.detach(), requires_grad=False)
        self.in_features, self.out_features = in_features, out_features

    weight_fp8: Tensor
    weight_scale: Tensor

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Fp8Linear:
        """The FP8 form of `linear`."""
        return cls(linear.weight, linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Maps [..., in] (bf16/fp16/fp32) to [..., out] in the input's dtype."""
        rows = x.reshape(-1, self.in_features)
        count = rows.shape[0]
        if x.is_cuda and count % 16:  # the FP8 product takes row counts in multiples of 16
            rows = torch.nn.functional.pad(rows, (0, 0, 0, 16 - count % 16))
        scale = _row_scale(rows).to(rows.dtype)  # the scale divided by is the one multiplied
        quantized = _to_fp8(rows / scale)
        if x.is_cuda:
            out = torch._scaled_mm(quantized, self.weight_fp8.t(), scale_a=scale.float(),
                                   scale_b=self.weight_scale, out_dtype=x.dtype)[:count]
        else:  # the same arithmetic, emulated (tests; no FP8 matrix unit)
            weight = self.weight_fp8.float() * self.weight_scale.t()
            out = ((quantized.float() * scale.float()) @ weight.t()).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)


def merge_lora(model: Any) -> bool:
    """Merges the LM's LoRA into its base weights in place; False when it has none."""
    llm = model.llm
    if not hasattr(llm.llama_model, "merge_and_unload"):
        return False
    llm.llama_model = llm.llama_model.merge_and_unload()
    return True


def _swap_linears(root: nn.Module) -> int:
    count = 0
    for name, child in list(root.named_children()):
        if isinstance(child, nn.Linear):
            setattr(root, name, Fp8Linear.from_linear(child))
            count += 1
        else:
            count += _swap_linears(child)
    return count


@torch.no_grad()
def quantize_fp8(model: Any) -> dict[str, int]:
    """FP8 linears in the LM's decoder layers and ImageBind's vision blocks (LoRA merged first).

    The embeddings, the LM head, `llama_proj`, the decoder's and the prompt learner's layers
    stay as they are (small, or read at one position only).

    Returns:
        How many linear layers were replaced, per part.
    """
    merge_lora(model)
    decoder = model.base_lm.get_decoder()
    llm_count = sum(_swap_linears(layer) for layer in decoder.layers)
    vision_count = 0
    vision = getattr(model.encoder, "vision", None)
    for block in getattr(vision, "blocks", []):
        vision_count += _swap_linears(block)
        attention = block.attn
        attention.in_proj_fp8 = Fp8Linear(attention.in_proj_weight, attention.in_proj_bias)
        vision_count += 1
    return {"llm": llm_count, "vision": vision_count}


def compile_encoder(model: Any) -> bool:
    """Compiles the image encoder's forward with `torch.compile` (fuses its elementwise work).

    The first call of each batch size compiles (tens of seconds for ImageBind-Huge); later
    calls run the compiled kernels. Returns True.
    """
    encoder = model.encoder
    encoder.encode_image = torch.compile(encoder.encode_image)
    return True
