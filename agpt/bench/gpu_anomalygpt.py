"""Full-size AnomalyGPT on one GPU with random weights: verdict latency, decoding speed, memory.

The released architecture (ImageBind-Huge, a Vicuna-7B-shaped LLaMA with PandaGPT's LoRA r 32
on q/k/v/o) is built on `meta`, allocated once on the GPU and filled with random values in
place, so no checkpoint is needed and nothing passes through host memory. The tokenizer is a
small byte-level BPE trained here on the dialogue format (the LM's vocabulary stays 32,001).

    python -m agpt.bench.gpu_anomalygpt [--device cuda] [--new-tokens 32] [--repeats 5]

prints one JSON report: build time, weight memory, per batch size (1 and 8) the ImageBind +
map + prompt-learner time, the single LLM prefill, both together (the verdict), greedy
decoding throughput, and the peak allocated GPU memory. The random-weight helpers live in
`inference/model/testing.py` (shared with the GPU test and the CPU tests at tiny sizes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from inference.model.anomalygpt.model import AnomalyGPT, AnomalyGPTConfig
from inference.model.testing import (
    CLASSES,
    build_random,
    offline_tokenizer,
    random_pixels,
    vicuna_7b_config,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    """(median seconds over `repeats` calls after one warm-up, last result)."""
    result = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


@torch.no_grad()
def measure(
    model: AnomalyGPT, *, batch: int, new_tokens: int = 32, repeats: int = 3
) -> dict[str, float]:
    """Times the verdict path (zero-shot) and greedy decoding of `new_tokens` per row."""
    device = model.device
    pixels = random_pixels(batch, device=str(device))
    names = [CLASSES[i % len(CLASSES)] for i in range(batch)]
    encode_s, inputs = timed(lambda: model.prompt_inputs(pixels, names), device, repeats)
    llm = model.llm
    args = (inputs.conversations, inputs.image_embeds, inputs.prompt_embeds)
    prefill_s, _ = timed(lambda: llm.verdict_logits(*args), device, repeats)
    verdict_s, _ = timed(
        lambda: llm.verdict_logits(*model.prompt_inputs(pixels, names)[:3]), device, repeats
    )
    embeds, mask = llm.build_inputs(*args)
    tokenizer = llm.tokenizer

    def decode() -> torch.Tensor:
        return llm.llama_model.generate(  # type: ignore[operator]
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )

    generate_s, generated = timed(decode, device, max(1, repeats // 2))
    tokens = int(generated.shape[0] * generated.shape[1])
    return {
        "batch": batch,
        "prompt_tokens": int(embeds.shape[1]),
        "encode_ms": 1e3 * encode_s,
        "prefill_ms": 1e3 * prefill_s,
        "verdict_ms": 1e3 * verdict_s,
        "generate_s": generate_s,
        "new_tokens_per_row": int(generated.shape[1]),
        "tokens_per_s": tokens / generate_s,
        "ms_per_decode_step": 1e3 * generate_s / max(1, int(generated.shape[1])),
    }


def main(argv: list[str] | None = None) -> None:
    """Builds the full-size model on the device and prints the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    model = build_random(
        AnomalyGPTConfig.official_7b(), vicuna_7b_config(), offline_tokenizer(),
        device=device, dtype=torch.bfloat16,
    )
    _sync(device)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__,
        "dtype": "bfloat16",
        "build_s": time.perf_counter() - start,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30,
    }
    for batch in (1, 8):
        report[f"batch_{batch}"] = measure(
            model, batch=batch, new_tokens=args.new_tokens, repeats=args.repeats
        )
    if device.type == "cuda":
        report["peak_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
