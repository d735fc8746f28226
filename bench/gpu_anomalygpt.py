"""Full-size AnomalyGPT on one GPU with random weights: verdict latency, decoding speed, memory.

The released architecture (ImageBind-Huge, a Vicuna-7B-shaped LLaMA with PandaGPT's LoRA r 32
on q/k/v/o) is built on `meta`, allocated once on the GPU and filled with random values in
place, so no checkpoint is needed and nothing passes through host memory. The tokenizer is a
small byte-level BPE trained here on the dialogue format (the LM's vocabulary stays 32,001).

    python -m bench.gpu_anomalygpt [--device cuda] [--new-tokens 32] [--repeats 5]

prints one JSON report: build time, weight memory, per batch size (1 and 8) the ImageBind +
map + prompt-learner time, the single LLM prefill, both together (the verdict), greedy
decoding throughput, and the peak allocated GPU memory. The helpers are shared with
`tests/inference/model/test_anomalygpt_gpu.py` and the CPU tests (tiny sizes).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, PretrainedConfig, PreTrainedTokenizerFast

from inference.model.anomalygpt import AnomalyGPT, AnomalyGPTConfig
from inference.model.conversation import query_text

CLASSES = ("bottle", "metal_nut", "transistor", "carpet", "screw", "pill", "zipper", "cable")
_ANSWERS = (
    "No, there is no anomaly in the image.",
    "Yes, there is an anomaly in the image, at the top left of the image.",
    "Yes, there are 2 anomalies in the image, they are at the center and bottom right of "
    "the image.",
)


def offline_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the dialogue format, adding BOS like Vicuna's tokenizer.

    "###", " Yes" and " No" come out as tokens, so the verdict and stop ids exist.
    """
    questions = [query_text(name.replace("_", " ")) for name in CLASSES]
    corpus = [
        f"### Human: <Img></Img> {q}\n### Assistant: {a}\n###"
        for q in questions
        for a in _ANSWERS
    ] * 4
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer)
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="</s>",
    )


def vicuna_7b_config(vocab_size: int = 32001) -> LlamaConfig:
    """LLaMA-7B / Vicuna-7B v0 shapes (hidden 4096, 32 layers and heads, MLP 11008)."""
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048,
        rms_norm_eps=1e-6, tie_word_embeddings=False,
    )


@torch.no_grad()
def fill_random_(model: torch.nn.Module, *, std: float = 0.02, seed: int = 0) -> None:
    """Random weights in place: matrices N(0, std), biases 0, norm gains 1."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("log_logit_scale"):
            param.fill_(math.log(1 / 0.07))
        elif name.endswith("bias"):
            param.zero_()
        elif param.ndim == 1:  # LayerNorm / RMSNorm gains
            param.fill_(1.0)
        else:
            param.normal_(0.0, std, generator=generator)


def build_random(
    config: AnomalyGPTConfig,
    lm_config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerFast,
    *,
    device: str | torch.device,
    dtype: torch.dtype,
    std: float = 0.02,
    seed: int = 0,
) -> AnomalyGPT:
    """`AnomalyGPT.empty` (meta → `to_empty(device)`) filled by `fill_random_`."""
    model = AnomalyGPT.empty(config, lm_config, tokenizer, device=device, dtype=dtype)
    fill_random_(model, std=std, seed=seed)
    return model


def random_pixels(
    batch: int, *, size: int = 224, seed: int = 0, device: str = "cpu"
) -> torch.Tensor:
    """[B, 3, size, size] standard-normal "normalised" images."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator).to(device)


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
