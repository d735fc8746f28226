"""Full-size AnomalyGPT (ImageBind-Huge + Vicuna-7B shapes, random bf16 weights) on a GPU.

Built on `meta` and allocated straight on the GPU (no host copy), LoRA r 32 on q/k/v/o; a
batch of 8 goes through the zero-shot verdict path. Prefill and generation wall times and the
peak allocated memory are printed (`-s`) and written to `$AGPT_GPU_REPORT` when set.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from agpt.bench.gpu_anomalygpt import measure_batch
from inference.model.anomalygpt.model import AnomalyGPT, AnomalyGPTConfig
from inference.model.positions import NO_ANOMALY
from inference.model.testing import (
    CLASSES,
    build_random,
    offline_tokenizer,
    random_pixels,
    tiny_llama_config,
    vicuna_7b_config,
)

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")

BATCH = 8
NEW_TOKENS = 32


def check_verdict_path(model: AnomalyGPT, device: str, new_tokens: int) -> dict[str, Any]:
    """Runs and checks the batched zero-shot path; returns timings (also used at tiny size)."""
    pixels = random_pixels(BATCH, device=device)
    names = list(CLASSES[:BATCH])
    results = model.verdicts(pixels, names, explain="all", max_new_tokens=new_tokens)
    assert len(results) == BATCH
    for verdict in results:
        assert verdict.anomaly_map.shape == (224, 224)
        assert torch.isfinite(verdict.anomaly_map).all()
        assert 0.0 <= verdict.probability <= 1.0
        assert math.isfinite(verdict.score)
        assert isinstance(verdict.text, str)
        assert "###" not in verdict.text
    quiet = model.verdicts(pixels, names, explain="none")
    assert [v.text == NO_ANOMALY for v in quiet] == [not v.anomalous for v in quiet]

    # Generation stops at the first "###": force it as the first token of every row.
    inputs = model.prompt_inputs(pixels, names)
    separator = model.llm.separator_ids[0]
    steps: list[int] = []

    def force_separator(module: torch.nn.Module, args: Any, logits: torch.Tensor) -> torch.Tensor:
        steps.append(1)
        forced = torch.zeros_like(logits)
        forced[..., separator] = 1.0
        return forced

    handle = model.base_lm.get_output_embeddings().register_forward_hook(force_separator)
    try:
        texts = model.llm.generate(*inputs[:3], max_new_tokens=new_tokens)
    finally:
        handle.remove()
    assert texts == [""] * BATCH
    assert len(steps) == 1  # the prefill's token was "###"; no decoding step followed

    return measure_batch(model, BATCH, repeats=3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA GPU: torch.cuda.is_available() is False")
def test_full_size_batch_of_8_zero_shot_verdicts_on_gpu() -> None:
    device = "cuda"
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model = build_random(AnomalyGPTConfig.official_7b(), vicuna_7b_config(), offline_tokenizer(),
                         device=device, dtype=torch.bfloat16)
    torch.cuda.synchronize()
    build_s = time.perf_counter() - start
    tensors = list(model.parameters()) + list(model.buffers())
    assert all(t.is_cuda for t in tensors)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    lora = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    assert lora == 32 * 4 * 2 * 32 * 4096  # r 32 on q, k, v, o of 32 layers
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    assert torch.cuda.memory_allocated() / 2**30 < weights_gib + 1  # no second copy

    timings = check_verdict_path(model, device, NEW_TOKENS)
    report = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "build_s": build_s,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_gib": weights_gib,
        **{f"batch_8_{k}": v for k, v in timings.items() if k != "batch"},
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
    }
    print(json.dumps(report, indent=2))  # noqa: T201 - the GPU figures, shown with -s
    if path := os.environ.get("AGPT_GPU_REPORT"):
        Path(path).write_text(json.dumps(report, indent=2))
    for key in ("batch_8_verdict_ms", "batch_8_detection_fps", "peak_allocated_gib"):
        assert math.isfinite(report[key])
        assert report[key] > 0


def test_the_gpu_tests_verdict_path_runs_at_tiny_size_on_cpu() -> None:
    # Keeps the GPU test's code path (build on meta, batched verdicts, "###" stop, timings)
    # exercised on every run, also where no GPU is lent.
    tokenizer = offline_tokenizer()
    model = build_random(AnomalyGPTConfig.tiny(), tiny_llama_config(len(tokenizer)), tokenizer,
                         device="cpu", dtype=torch.float32)
    timings = check_verdict_path(model, "cpu", new_tokens=4)
    assert timings["verdict_ms"] > 0
