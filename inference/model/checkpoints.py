"""Official PandaGPT / AnomalyGPT delta checkpoints: strict loading, saving, lazy checking.

The reference (CASIA-IVA-Lab/AnomalyGPT `code/model/agent.py` `save_model`, lines 61-72) saves
every parameter that requires grad of `OpenLLAMAPEFTModel` with `torch.save`, and loads deltas
with `load_state_dict(strict=False)` (`agent.py` line 81, `web_demo.py` lines 27-30), which
silently skips anything that does not fit. Its attribute names give the key prefixes:
`image_decoder.fc.{i}` (`LinearLayer(1280, 1024, 4)`), `prompt_learner.meta_net.{0..15}` /
`prompt_learner.base_prompts` (`PromptLearner(1, 4096)`), `llama_proj` (Linear 1024→4096) and
`llama_model.base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight`
(peft 0.2/0.3; newer peft spells `lora_A.default.weight`). Here every file key must be consumed
and every target filled, shapes must agree, or a `CheckpointError` names each offender and
nothing is copied. LoRA α/r scaling is not stored in the files: the target's `LoraConfig` must
use the reference's r 32, α 32.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from .decoder import ImageDecoder
from .imagebind import ImageBindConfig, ImageBindEncoder, official_name_map
from .prompt_learner import PromptLearner

__all__ = [
    "CheckpointError",
    "FileCheck",
    "LlmDims",
    "LoadedDelta",
    "ModelCheckReport",
    "anomalygpt_expected_shapes",
    "check_checkpoints",
    "is_lora_key",
    "load_anomalygpt_delta",
    "load_pandagpt_delta",
    "lora_key_map",
    "read_state_dict",
    "save_anomalygpt_delta",
    "shape_problems",
]

StateSource = str | os.PathLike[str] | Mapping[str, Tensor]

DECODER_PREFIX = "image_decoder."
PROMPT_LEARNER_PREFIX = "prompt_learner."
LLAMA_PROJ_PREFIX = "llama_proj."
LLAMA_PROJ_KEYS = ("llama_proj.weight", "llama_proj.bias")
_ADAPTER = "default"
_LORA_KEY = re.compile(
    r"^llama_model\.base_model\.model\.(model\.layers\.(\d+)\.self_attn\.([qkvo])_proj"
    r"\.lora_([AB]))(?:\.default)?\.weight$"
)
# A LoRA parameter of a peft-wrapped LLaMA, whatever wraps it (PeftModel, LoraModel, bare).
_TARGET_LORA = re.compile(r"(?:^|\.)(model\.layers\.\d+\..+\.lora_[AB])\.([^.]+)\.weight$")


class CheckpointError(ValueError):
    """A checkpoint does not fit its target; the message names every offending key."""


@dataclass(frozen=True)
class LoadedDelta:
    """What a delta loader did.

    Attributes:
        applied: File keys copied into the given modules.
        llama_proj: `weight`/`bias` from the file when no `llama_proj` module was given.
        lora: Canonical peft name (see `lora_key_map`) → tensor when no `lora_target` was given.
    """

    applied: tuple[str, ...]
    llama_proj: dict[str, Tensor] = field(default_factory=dict)
    lora: dict[str, Tensor] = field(default_factory=dict)


def is_lora_key(key: str) -> bool:
    """Whether `key` is an official PandaGPT/AnomalyGPT LoRA tensor name (either spelling)."""
    return _LORA_KEY.match(key) is not None


def lora_key_map(key: str, adapter: str = _ADAPTER) -> str:
    """Official LoRA key → the parameter name in a peft ≥ 0.10 `PeftModel`.

    `llama_model.base_model.model.model.layers.3.self_attn.q_proj.lora_A[.default].weight`
    → `base_model.model.model.layers.3.self_attn.q_proj.lora_A.default.weight`.

    Raises:
        CheckpointError: `key` is not an official LoRA key.
    """
    match = _LORA_KEY.match(key)
    if match is None:
        msg = f"not an official LoRA key: {key}"
        raise CheckpointError(msg)
    return f"base_model.model.{match.group(1)}.{adapter}.weight"


def _lora_relative(key: str) -> str:
    """Official key → `model.layers.{i}.self_attn.{p}_proj.lora_{X}` (spelling-free)."""
    match = _LORA_KEY.match(key)
    assert match is not None
    return match.group(1)


def _official_lora(relative: str) -> str:
    return f"llama_model.base_model.model.{relative}.weight"


def read_state_dict(source: StateSource) -> Mapping[str, Tensor]:
    """A flat state_dict from a mapping or a `torch.save` file, read lazily.

    Files load with `weights_only=True` and `mmap=True` onto the CPU, so tensor data is only
    read when copied into its target. Files in the pre-1.6 (non-zip) format cannot be mapped
    and are read whole.

    Raises:
        CheckpointError: the file does not hold a flat mapping of names to tensors.
    """
    if isinstance(source, Mapping):
        state = source
    else:
        try:
            state = torch.load(source, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            state = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        msg = f"{source!s}: expected a flat mapping of names to tensors"
        raise CheckpointError(msg)
    return state


def _targets(prefix: str, module: nn.Module) -> dict[str, Tensor]:
    return {f"{prefix}{name}": p for name, p in module.named_parameters()}


def _lora_targets(model: nn.Module, adapter: str = _ADAPTER) -> dict[str, Tensor]:
    """Relative LoRA name → parameter of a peft-wrapped LLaMA (adapter `adapter` only)."""
    found: dict[str, Tensor] = {}
    for name, param in model.named_parameters():
        match = _TARGET_LORA.search(name)
        if match is not None and match.group(2) == adapter:
            found[match.group(1)] = param
    if not found:
        msg = f"lora_target has no LoRA parameters of adapter {adapter!r}"
        raise CheckpointError(msg)
    return found


def shape_problems(
    found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]]
) -> list[str]:
    """`missing KEY` / `mis-shaped KEY: got, expected` for every expected key."""
    problems = []
    for key, want in expected.items():
        if key not in found:
            problems.append(f"missing {key}")
        elif tuple(found[key]) != tuple(want):
            problems.append(f"mis-shaped {key}: {tuple(found[key])}, expected {tuple(want)}")
    return problems


class _Plan:
    """Collects (target, value) copies and problems; copies only if there are none."""

    def __init__(self, state: Mapping[str, Tensor]) -> None:
        self.state = state
        self.copies: list[tuple[Tensor, Tensor]] = []
        self.applied: list[str] = []
        self.problems: list[str] = [
            f"non-floating {k}: {v.dtype}" for k, v in state.items() if not v.is_floating_point()
        ]

    def match(self, targets: Mapping[str, Tensor], file_keys: Mapping[str, str]) -> None:
        """Pair targets with file tensors; `file_keys` maps a target name to its file key."""
        for name, target in targets.items():
            key = file_keys.get(name)
            if key is None:
                self.problems.append(f"missing {name}")
            elif tuple(self.state[key].shape) != tuple(target.shape):
                got, want = tuple(self.state[key].shape), tuple(target.shape)
                self.problems.append(f"mis-shaped {key}: {got}, expected {want}")
            else:
                self.copies.append((target, self.state[key]))
                self.applied.append(key)
        self.problems += [f"unexpected {file_keys[n]}" for n in file_keys if n not in targets]

    def lora(self, keys: list[str], lora_target: nn.Module | None) -> dict[str, Tensor]:
        """Match LoRA keys to `lora_target`, or return them by canonical name."""
        by_relative: dict[str, str] = {}
        for key in keys:
            relative = _lora_relative(key)
            if relative in by_relative:
                self.problems.append(f"duplicate LoRA tensor {key} and {by_relative[relative]}")
            by_relative[relative] = key
        if lora_target is None:
            return {lora_key_map(k): self.state[k] for k in by_relative.values()}
        # Name targets by their official key (spelling without `.default`) for the messages.
        targets = {_official_lora(r): t for r, t in _lora_targets(lora_target).items()}
        self.match(targets, {_official_lora(r): k for r, k in by_relative.items()})
        return {}

    @torch.no_grad()
    def run(self, what: str) -> tuple[str, ...]:
        if self.problems:
            msg = f"{what} does not fit: " + "; ".join(self.problems)
            raise CheckpointError(msg)
        for target, value in self.copies:
            target.copy_(value)  # into the target's own storage, device and dtype
        return tuple(self.applied)


def _llama_proj(plan: _Plan, keys: list[str], llama_proj: nn.Module | None) -> dict[str, Tensor]:
    """Match `llama_proj.*` to a module, or check the pair and return it."""
    if llama_proj is not None:
        plan.match(_targets(LLAMA_PROJ_PREFIX, llama_proj), {k: k for k in keys})
        return {}
    plan.problems += [f"missing {k}" for k in LLAMA_PROJ_KEYS if k not in keys]
    plan.problems += [f"unexpected {k}" for k in keys if k not in LLAMA_PROJ_KEYS]
    return {k.removeprefix(LLAMA_PROJ_PREFIX): plan.state[k] for k in keys}


def _split(keys: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """(llama_proj keys, LoRA keys, other keys)."""
    proj, lora, other = [], [], []
    for key in keys:
        if key.startswith(LLAMA_PROJ_PREFIX):
            proj.append(key)
        elif is_lora_key(key):
            lora.append(key)
        else:
            other.append(key)
    return proj, lora, other


def load_anomalygpt_delta(
    source: StateSource,
    *,
    decoder: nn.Module,
    prompt_learner: nn.Module,
    llama_proj: nn.Module | None = None,
    lora_target: nn.Module | None = None,
) -> LoadedDelta:
    """Load an official AnomalyGPT delta (`pytorch_model.pt`) strictly.

    Load it after the PandaGPT delta: `llama_proj.*` and LoRA tensors a user-trained delta may
    hold override PandaGPT's.

    Args:
        source: Path of the delta, or its state_dict.
        decoder: `ImageDecoder` receiving `image_decoder.*`.
        prompt_learner: `PromptLearner` receiving `prompt_learner.*`.
        llama_proj: Module receiving `llama_proj.*` if the file has them (else returned).
        lora_target: peft-wrapped LLM receiving LoRA tensors if the file has them (else
            returned under their canonical names).

    Returns:
        `LoadedDelta` (applied keys, and tensors that had no target module).

    Raises:
        CheckpointError: naming each missing, unexpected, mis-shaped or non-float key.
    """
    state = read_state_dict(source)
    plan = _Plan(state)
    proj, lora, other = _split(state)
    core = _targets(DECODER_PREFIX, decoder) | _targets(PROMPT_LEARNER_PREFIX, prompt_learner)
    plan.match(core, {k: k for k in other})
    spare_proj = _llama_proj(plan, proj, llama_proj) if proj else {}
    spare_lora = plan.lora(lora, lora_target) if lora else {}
    return LoadedDelta(plan.run("AnomalyGPT delta"), spare_proj, spare_lora)


def load_pandagpt_delta(
    source: StateSource,
    *,
    llama_proj: nn.Module,
    lora_target: nn.Module | None = None,
) -> LoadedDelta:
    """Load an official PandaGPT delta (`llama_proj.*` + LoRA) strictly.

    Args:
        source: Path of the delta, or its state_dict.
        llama_proj: Linear(1024 → LLM hidden) receiving `llama_proj.*`.
        lora_target: peft-wrapped LLM (`PeftModel`; a `LoraModel` or a LLaMA with injected
            adapters also fits) whose every `default` LoRA tensor must be in the file. Without
            it the LoRA tensors are returned under their canonical names.

    Returns:
        `LoadedDelta`.

    Raises:
        CheckpointError: naming each missing, unexpected, mis-shaped or non-float key.
    """
    state = read_state_dict(source)
    plan = _Plan(state)
    proj, lora, other = _split(state)
    plan.problems += [f"unexpected {k}" for k in other]
    if not lora:
        plan.problems.append("missing LoRA tensors (llama_model.base_model.model.model.layers.*)")
    plan.match(_targets(LLAMA_PROJ_PREFIX, llama_proj), {k: k for k in proj})
    spare_lora = plan.lora(lora, lora_target)
    return LoadedDelta(plan.run("PandaGPT delta"), {}, spare_lora)


def save_anomalygpt_delta(
    path: str | os.PathLike[str],
    *,
    decoder: nn.Module,
    prompt_learner: nn.Module,
    dtype: torch.dtype = torch.float16,
) -> None:
    """Write decoder and prompt learner in the official AnomalyGPT delta layout.

    The file is written next to `path` and renamed into place, so a reader never sees half.

    Args:
        path: Destination `.pt` file.
        decoder: `ImageDecoder` (saved as `image_decoder.*`).
        prompt_learner: `PromptLearner` (saved as `prompt_learner.*`).
        dtype: Tensor dtype in the file (the released deltas are float16).
    """
    targets = _targets(DECODER_PREFIX, decoder) | _targets(PROMPT_LEARNER_PREFIX, prompt_learner)
    state = {k: v.detach().to(device="cpu", dtype=dtype) for k, v in targets.items()}
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def anomalygpt_expected_shapes(
    *, vision_width: int = 1280, embed_dim: int = 1024, taps: int = 4, hidden: int = 4096
) -> dict[str, tuple[int, ...]]:
    """Official key → shape of the decoder and prompt learner part of an AnomalyGPT delta."""
    with torch.device("meta"):
        decoder = ImageDecoder(vision_width, embed_dim, taps)
        learner = PromptLearner(hidden)
    targets = _targets(DECODER_PREFIX, decoder) | _targets(PROMPT_LEARNER_PREFIX, learner)
    return {k: tuple(v.shape) for k, v in targets.items()}


# --- Lazy check of the files a user brings (`agpt model check`) -------------------------------

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
    proj, lora, other = _split(shapes)
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
    found = {_official_lora(_lora_relative(k)): shapes[k] for k in lora}
    rank = next((s[0] for k, s in found.items() if k.endswith("lora_A.weight")), None)
    if rank is None:
        check.problems.append("LoRA tensors without any lora_A")
        return
    check.facts.append(f"LoRA rank {rank} on {len(found)} tensors")
    expected_lora = {_official_lora(r): s for r, s in dims.lora_shapes(rank).items()}
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
