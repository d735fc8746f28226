"""Lazy check of the official files a user brings (`agpt model check`).

Reads only tensor names, shapes and dtypes (safetensors headers, memory-mapped pickles), so
a 13 GB LLM is checked in seconds without loading it.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open

from ..anomalygpt.imagebind import ImageBindConfig, ImageBindEncoder, official_name_map
from .checkpoints import (
    anomalygpt_expected_shapes,
    lora_relative_key,
    official_lora_key,
    read_state_dict,
    shape_problems,
    split_delta_keys,
)

T = TypeVar("T")
_READ_ERRORS = (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError,
                SafetensorError)
_SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
_FLOAT_DTYPES = {"float16", "bfloat16", "float32", "float64"}
_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


@dataclass(frozen=True)
class LlmDims:
    """LLaMA-architecture sizes the deltas depend on."""

    hidden: int
    layers: int
    q_out: int  # heads * head_dim
    kv_out: int  # key/value heads * head_dim
    intermediate: int
    vocab: int
    tied: bool = False

    @classmethod
    def vicuna_7b(cls) -> LlmDims:
        """Vicuna-7B v0 (LLaMA-7B with the added pad token)."""
        return cls(hidden=4096, layers=32, q_out=4096, kv_out=4096, intermediate=11008,
                   vocab=32001)

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> LlmDims:
        """From a Hugging Face `config.json` of a LLaMA-architecture model."""
        c: dict[str, Any] = dict(config)
        hidden, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
        head_dim = int(c.get("head_dim") or hidden // heads)
        return cls(hidden=hidden, layers=int(c["num_hidden_layers"]), q_out=heads * head_dim,
                   kv_out=int(c.get("num_key_value_heads") or heads) * head_dim,
                   intermediate=int(c["intermediate_size"]), vocab=int(c["vocab_size"]),
                   tied=bool(c.get("tie_word_embeddings", False)))

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Hugging Face LlamaForCausalLM weight name → shape (no biases)."""
        h, i = self.hidden, self.intermediate
        shapes = {"model.embed_tokens.weight": (self.vocab, h), "model.norm.weight": (h,)}
        if not self.tied:
            shapes["lm_head.weight"] = (self.vocab, h)
        for n in range(self.layers):
            p = f"model.layers.{n}."
            shapes |= {
                p + "self_attn.q_proj.weight": (self.q_out, h),
                p + "self_attn.k_proj.weight": (self.kv_out, h),
                p + "self_attn.v_proj.weight": (self.kv_out, h),
                p + "self_attn.o_proj.weight": (h, self.q_out),
                p + "mlp.gate_proj.weight": (i, h),
                p + "mlp.up_proj.weight": (i, h),
                p + "mlp.down_proj.weight": (h, i),
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
            }
        return shapes

    def lora_shapes(self, rank: int) -> dict[str, tuple[int, ...]]:
        """Relative LoRA name (`model.layers.{i}.self_attn.q_proj.lora_A`) → shape."""
        io = {"q": (self.hidden, self.q_out), "k": (self.hidden, self.kv_out),
              "v": (self.hidden, self.kv_out), "o": (self.q_out, self.hidden)}
        shapes: dict[str, tuple[int, ...]] = {}
        for n in range(self.layers):
            for proj, (fan_in, fan_out) in io.items():
                p = f"model.layers.{n}.self_attn.{proj}_proj.lora_"
                shapes |= {p + "A": (rank, fan_in), p + "B": (fan_out, rank)}
        return shapes


@dataclass
class FileCheck:
    """The verdict on one checkpoint file or directory."""

    name: str
    path: str
    facts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


@dataclass
class ModelCheckReport:
    """Verdicts on every checkpoint given to `check_checkpoints`."""

    files: list[FileCheck]

    @property
    def ok(self) -> bool:
        """True when every file passed."""
        return all(f.ok for f in self.files)

    def format(self, max_problems: int = 20) -> str:
        """Readable multi-line report, at most `max_problems` problems per file."""
        lines = []
        for f in self.files:
            lines.append(f"{'OK  ' if f.ok else 'FAIL'} {f.name}: {f.path}")
            lines += [f"     {fact}" for fact in f.facts]
            lines += [f"     ! {p}" for p in f.problems[:max_problems]]
            if len(f.problems) > max_problems:
                lines.append(f"     ! ... {len(f.problems) - max_problems} more problems")
        return "\n".join(lines) if lines else "no checkpoints given"

    __str__ = format


def _tensor_meta(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name → (shape, dtype name) without reading tensor data."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            out = {}
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a dict
                piece = handle.get_slice(key)
                dtype = piece.get_dtype()
                out[key] = (tuple(piece.get_shape()), _SAFETENSORS_DTYPES.get(dtype, dtype))
            return out
    state = read_state_dict(path)
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()}


def _describe(check: FileCheck, meta: Mapping[str, tuple[tuple[int, ...], str]]) -> None:
    dtypes = sorted({d for _, d in meta.values()})
    size = sum(_DTYPE_BYTES.get(d, 4) * _numel(s) for s, d in meta.values())
    check.facts.append(f"{len(meta)} tensors, {', '.join(dtypes)}, {size / 1e6:.1f} MB")
    check.problems += [f"non-floating {k}: {d}" for k, (_, d) in meta.items()
                       if d not in _FLOAT_DTYPES]


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _check_imagebind(check: FileCheck, config: ImageBindConfig) -> None:
    meta = _tensor_meta(Path(check.path))
    _describe(check, meta)
    with torch.device("meta"):
        encoder = ImageBindEncoder(config)
    ours = dict(encoder.named_parameters()) | dict(encoder.named_buffers())
    expected = {k: tuple(ours[v].shape) for k, v in official_name_map(config).items()}
    check.problems += shape_problems({k: s for k, (s, _) in meta.items()}, expected)
    groups = ("modality_preprocessors", "modality_trunks", "modality_heads",
              "modality_postprocessors")
    check.problems += [
        f"unexpected {k}" for k in meta if k not in expected
        and any(k.startswith(f"{g}.{m}.") for g in groups for m in ("vision", "text"))
    ]


def _check_llm(check: FileCheck) -> LlmDims | None:
    root = Path(check.path)
    config = json.loads((root / "config.json").read_text())
    if config.get("model_type") != "llama":
        check.problems.append(f"model_type {config.get('model_type')!r}, expected 'llama'")
        return None
    dims = LlmDims.from_config(config)
    check.facts.append(f"LLaMA hidden {dims.hidden}, {dims.layers} layers, vocab {dims.vocab}")
    if not any((root / n).exists() for n in ("tokenizer.model", "tokenizer.json")):
        check.problems.append("missing tokenizer.model / tokenizer.json")
    files = []
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (root / index).exists():
            weight_map = json.loads((root / index).read_text())["weight_map"]
            files = sorted({root / f for f in weight_map.values()})
            break
    else:
        files = [root / n for n in ("model.safetensors", "pytorch_model.bin")
                 if (root / n).exists()][:1]
    if not files:
        check.problems.append("no model.safetensors / pytorch_model.bin (or index) found")
        return dims
    meta: dict[str, tuple[tuple[int, ...], str]] = {}
    for f in files:
        meta |= _tensor_meta(f)
    meta = {k: v for k, v in meta.items() if not k.endswith("rotary_emb.inv_freq")}
    _describe(check, meta)
    expected = dims.weight_shapes()
    check.problems += shape_problems({k: s for k, (s, _) in meta.items()}, expected)
    check.problems += [f"unexpected {k}" for k in meta if k not in expected
                       and not (dims.tied and k == "lm_head.weight")]
    return dims


def _check_delta(check: FileCheck, dims: LlmDims, *,
                 anomalygpt: Mapping[str, tuple[int, ...]] | None, embed_dim: int) -> None:
    """PandaGPT delta (`anomalygpt` None) or AnomalyGPT delta (its expected core shapes)."""
    meta = _tensor_meta(Path(check.path))
    _describe(check, meta)
    shapes = {k: s for k, (s, _) in meta.items()}
    proj, lora, other = split_delta_keys(shapes)
    if anomalygpt is not None:
        check.problems += shape_problems(shapes, anomalygpt)
        check.problems += [f"unexpected {k}" for k in other if k not in anomalygpt]
    else:
        check.problems += [f"unexpected {k}" for k in other]
    if proj or anomalygpt is None:
        expected_proj = {"llama_proj.weight": (dims.hidden, embed_dim),
                         "llama_proj.bias": (dims.hidden,)}
        check.problems += shape_problems(shapes, expected_proj)
        check.problems += [f"unexpected {k}" for k in proj if k not in expected_proj]
    if not lora:
        if anomalygpt is None:
            check.problems.append("missing LoRA tensors")
        return
    found = {official_lora_key(lora_relative_key(k)): shapes[k] for k in lora}
    rank = next((s[0] for k, s in found.items() if k.endswith("lora_A.weight")), None)
    if rank is None:
        check.problems.append("LoRA tensors without any lora_A")
        return
    check.facts.append(f"LoRA rank {rank} on {len(found)} tensors")
    expected_lora = {official_lora_key(r): s for r, s in dims.lora_shapes(rank).items()}
    check.problems += shape_problems(found, expected_lora)
    check.problems += [f"unexpected {k}" for k in found if k not in expected_lora]
    if len(found) != len(lora):
        check.problems.append("LoRA tensors present in both spellings (with/without .default)")


def check_checkpoints(
    *,
    imagebind: str | os.PathLike[str] | None = None,
    llm: str | os.PathLike[str] | None = None,
    pandagpt: str | os.PathLike[str] | None = None,
    anomalygpt: str | os.PathLike[str] | None = None,
    imagebind_config: ImageBindConfig | None = None,
) -> ModelCheckReport:
    """Validate the checkpoint files a user brings, without building the models.

    Tensors are read lazily (`mmap`, safetensors headers): only names, shapes and dtypes.
    A file that cannot be read becomes a problem in the report, not an exception.

    Args:
        imagebind: `imagebind_huge.pth` (vision and text parts are checked).
        llm: Hugging Face LLaMA directory (Vicuna-7B v0, or the CPU profile's SmolLM2).
        pandagpt: PandaGPT delta `pytorch_model.pt`.
        anomalygpt: AnomalyGPT delta `pytorch_model.pt`.
        imagebind_config: Vision/joint sizes the decoder is checked against (default: huge).

    Returns:
        `ModelCheckReport`; deltas are checked against the LLM's sizes when `llm` is given,
        else against Vicuna-7B's.
    """
    config = imagebind_config or ImageBindConfig.huge()
    files: list[FileCheck] = []

    def run(name: str, path: str | os.PathLike[str], step: Callable[[FileCheck], T]) -> T | None:
        check = FileCheck(name, str(path))
        files.append(check)
        try:
            return step(check)
        except _READ_ERRORS as err:
            check.problems.append(f"cannot read: {type(err).__name__}: {err}")
            return None

    dims = LlmDims.vicuna_7b()
    if imagebind is not None:
        run("imagebind", imagebind, lambda c: _check_imagebind(c, config))
    if llm is not None:
        read: LlmDims | None = run("llm", llm, _check_llm)
        dims = read or dims  # the LLM's own sizes when its config could be read
    elif pandagpt is not None or anomalygpt is not None:
        files.append(FileCheck("llm", "-", facts=["not given: deltas checked as Vicuna-7B"]))
    if pandagpt is not None:
        run("pandagpt", pandagpt,
            lambda c: _check_delta(c, dims, anomalygpt=None, embed_dim=config.embed_dim))
    if anomalygpt is not None:
        expected = anomalygpt_expected_shapes(
            vision_width=config.vision_width, embed_dim=config.embed_dim,
            taps=len(config.tap_layers), hidden=dims.hidden)
        run("anomalygpt", anomalygpt,
            lambda c: _check_delta(c, dims, anomalygpt=expected, embed_dim=config.embed_dim))
    return ModelCheckReport(files)
