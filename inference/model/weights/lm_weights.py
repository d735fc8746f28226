"""Hugging Face causal-LM weights copied strictly into an existing (LoRA-wrapped) LM.

`AnomalyGPT.from_official` allocates the LM once on its device (built on `meta`), then fills
it here from the directory's safetensors / `pytorch_model.bin` files (sharded or not), read
lazily; every file key must be consumed and every LM weight filled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from os import PathLike
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import safe_open
from torch import Tensor, nn
from transformers import PreTrainedModel

from .checkpoints import CheckpointError, read_state_dict

__all__ = ["load_hf_lm_weights"]

_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE = ("model.safetensors", "pytorch_model.bin")
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # stored by old conversions, computed here


def _weight_files(root: Path) -> list[Path]:
    for index in _INDEXES:
        if (root / index).exists():
            weight_map = json.loads((root / index).read_text())["weight_map"]
            return sorted({root / name for name in weight_map.values()})
    for name in _SINGLE:
        if (root / name).exists():
            return [root / name]
    msg = f"{root}: no {', '.join(_INDEXES + _SINGLE)}"
    raise CheckpointError(msg)


@contextmanager
def _open_weights(path: Path) -> Iterator[Mapping[str, Any]]:
    """Name → lazily read tensor (safetensors handle or mmap'd `torch.load`)."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            yield _SafetensorsView(handle)
    else:
        yield read_state_dict(path)


class _SafetensorsView(Mapping[str, Any]):
    """Read-only mapping over a safetensors handle; shapes without reading data."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.names = list(handle.keys())

    def __getitem__(self, key: str) -> Tensor:
        return cast("Tensor", self.handle.get_tensor(key))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.handle.get_slice(key).get_shape())


def _lm_targets(lm: nn.Module) -> dict[str, Tensor]:
    """Checkpoint name → tensor of the LM's own weights (LoRA adapters left out)."""
    persistent = set(lm.state_dict(keep_vars=True))
    named = dict(lm.named_parameters()) | dict(lm.named_buffers())
    return {
        name.replace(".base_layer.", "."): tensor
        for name, tensor in named.items()
        if name in persistent and ".lora_" not in name
    }


@torch.no_grad()
def load_hf_lm_weights(lm: PreTrainedModel, llm_dir: str | PathLike[str]) -> tuple[str, ...]:
    """Fills a (possibly LoRA-wrapped) Hugging Face causal LM from its directory, strictly.

    Reads `model.safetensors` / `pytorch_model.bin` or their sharded indexes lazily and copies
    each tensor into the LM's existing storage (its device and dtype). Adapters are untouched.

    Returns:
        The file keys copied.

    Raises:
        CheckpointError: naming every missing, unexpected or mis-shaped tensor; nothing is
            copied then.
    """
    targets = _lm_targets(lm)
    text_config = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else None
    tied = bool(getattr(text_config or lm.config, "tie_word_embeddings", False))
    files = _weight_files(Path(llm_dir))
    problems: list[str] = []
    plan: dict[Path, list[str]] = {}
    seen: set[str] = set()
    with ExitStack() as stack:
        views = {path: stack.enter_context(_open_weights(path)) for path in files}
        for path, view in views.items():
            for key in view:
                if key.endswith(_IGNORED_SUFFIXES) or (tied and key == "lm_head.weight"):
                    continue
                target = targets.get(key)
                if target is None:
                    problems.append(f"unexpected {key}")
                    continue
                shape = view.shape(key) if isinstance(view, _SafetensorsView) else view[key].shape
                if tuple(shape) != tuple(target.shape):
                    got, want = tuple(shape), tuple(target.shape)
                    problems.append(f"mis-shaped {key}: {got}, expected {want}")
                if key in seen:
                    problems.append(f"duplicate {key} (in more than one file)")
                seen.add(key)
                plan.setdefault(path, []).append(key)
        problems += [f"missing {name}" for name in targets if name not in seen]
        if problems:
            msg = f"LM weights in {llm_dir} do not fit: " + "; ".join(problems)
            raise CheckpointError(msg)
        for path, keys in plan.items():
            for key in keys:
                targets[key].copy_(views[path][key])
    return tuple(key for keys in plan.values() for key in keys)
