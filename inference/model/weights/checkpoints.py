"""Official PandaGPT / AnomalyGPT delta checkpoints: strict loading and saving.

The lazy check of the files (`agpt model check`) is in `checkpoint_check.py`.

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

import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..anomalygpt.decoder import ImageDecoder
from ..anomalygpt.prompt_learner import PromptLearner

__all__ = [
    "CheckpointError",
    "LoadedDelta",
    "anomalygpt_expected_shapes",
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


def lora_relative_key(key: str) -> str:
    """Official key → `model.layers.{i}.self_attn.{p}_proj.lora_{X}` (spelling-free)."""
    match = _LORA_KEY.match(key)
    assert match is not None
    return match.group(1)


def official_lora_key(relative: str) -> str:
    return f"llama_model.base_model.model.{relative}.weight"


def read_state_dict(source: StateSource) -> Mapping[str, Tensor]:
    """A flat state_dict from a mapping or a `torch.save` file, read lazily.

    Files load with `weights_only=True` and `mmap=True` onto the CPU, so tensor data is only
    read when copied into its target. Files in the pre-1.6 (non-zip) format cannot be mapped
    and are read whole. A `.safetensors` file (what `agpt train` writes) loads with safetensors.

    Raises:
        CheckpointError: the file does not hold a flat mapping of names to tensors.
    """
    if isinstance(source, Mapping):
        state = source
    elif Path(source).suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(Path(source), device="cpu")
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
            relative = lora_relative_key(key)
            if relative in by_relative:
                self.problems.append(f"duplicate LoRA tensor {key} and {by_relative[relative]}")
            by_relative[relative] = key
        if lora_target is None:
            return {lora_key_map(k): self.state[k] for k in by_relative.values()}
        # Name targets by their official key (spelling without `.default`) for the messages.
        targets = {official_lora_key(r): t for r, t in _lora_targets(lora_target).items()}
        self.match(targets, {official_lora_key(r): k for r, k in by_relative.items()})
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


def split_delta_keys(keys: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
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
    proj, lora, other = split_delta_keys(state)
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
    proj, lora, other = split_delta_keys(state)
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
    llama_proj: nn.Module | None = None,
    lora_source: nn.Module | None = None,
) -> None:
    """Write decoder, prompt learner (optionally `llama_proj`, LoRA) as an AnomalyGPT delta.

    The layout is the official one.

    The file is written next to `path` and renamed into place, so a reader never sees half.
    A `.safetensors` suffix writes safetensors (same keys), anything else `torch.save`.

    Args:
        path: Destination `.pt` or `.safetensors` file.
        decoder: `ImageDecoder` (saved as `image_decoder.*`).
        prompt_learner: `PromptLearner` (saved as `prompt_learner.*`).
        dtype: Tensor dtype in the file (the released deltas are float16).
        llama_proj: Saved as `llama_proj.*` when given (a delta trained with it).
        lora_source: peft-wrapped LLaMA-style LM whose `default` LoRA tensors are saved
            under the official names (`llama_model.base_model.model.model.layers.{i}...`).
    """
    targets = _targets(DECODER_PREFIX, decoder) | _targets(PROMPT_LEARNER_PREFIX, prompt_learner)
    if llama_proj is not None:
        targets |= _targets(LLAMA_PROJ_PREFIX, llama_proj)
    if lora_source is not None:
        targets |= {official_lora_key(r): t for r, t in _lora_targets(lora_source).items()}
    state = {k: v.detach().to(device="cpu", dtype=dtype).contiguous()
             for k, v in targets.items()}
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            if path.suffix == ".safetensors":
                from safetensors.torch import save

                handle.write(save(state))
            else:
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
