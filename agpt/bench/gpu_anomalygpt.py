"""Full-size AnomalyGPT with random weights: detection and verdict frames/s per batch size.

`agpt bench model --profile anomalygpt-7b --random-weights [--device cuda]` builds the released
architecture (ImageBind-Huge, a Vicuna-7B-shaped LLaMA with PandaGPT's LoRA r 32 on q/k/v/o) on
`meta`, allocates it once on the device and fills it with random values in place, so no
checkpoint is needed and nothing passes through host memory. The tokenizer is a small
byte-level BPE trained here on the dialogue format (72 prompt tokens per frame, about what
Vicuna's tokenizer gives; the LM's vocabulary stays 32,001).

Per batch size (default 1, 2, 4, ..., 256), all in one run:

- **detection**: ImageBind encoder + the image decoder's map (`AnomalyGPT.anomaly_maps`,
  zero-shot), frames/s;
- **verdict**: the whole LLM verdict (`AnomalyGPT.verdicts(explain="none")`: encoder, map,
  prompt learner, one prefill, yes/no from the first answer token, maps copied to the host),
  frames/s;
- the peak allocated device memory of that batch size.

Beside them, the **baseline**: the batch-1 full generation path (encoder, map, prompt learner,
the verdict prefill and the answer sentence generated token by token, `--new-tokens` long,
20 by default: "Yes, there is an anomaly in the image, at the top left of the image." is about
that in Vicuna's tokenizer), frames/s. Decoded, normalised frames are on the device before the
clock starts. The report is written after every batch size (`--json`), so a run cut short keeps
what it measured.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from inference.model.anomalygpt.model import AnomalyGPT, AnomalyGPTConfig
from inference.model.testing import (
    CLASSES,
    build_random,
    offline_tokenizer,
    random_pixels,
    tiny_llama_config,
    vicuna_7b_config,
)

Scale = Literal["full", "tiny"]
TARGETS = {"detection_fps": 1500.0, "verdict_fps": 500.0, "speedup": 100.0,
           "batch_1_peak_gib": 24.0}


@dataclass(frozen=True)
class RandomWeightsPlan:
    """What `bench_random_weights` measures.

    Attributes:
        device: torch device ("cuda", "cuda:1", "cpu").
        batch_sizes: Batch sizes measured in increasing order; a size that runs out of device
            memory ends the sweep (recorded in the report).
        new_tokens: Length of the baseline's generated answer.
        repeats: Timed calls per measurement after one warm-up (median reported).
        scale: "full" for the released shapes, "tiny" for the same architecture at test size.
        dtype: Weight dtype ("bfloat16"; "float32" for tiny CPU runs).
        variants: Batch sizes at which the serving forms are measured after the main sweep
            (LoRA merged, then the encoder compiled, then FP8 linears; `serving.py`), with
            their agreement with the
            bf16 model's P(yes) and maps on 16 frames; empty = none.
    """

    device: str = "cuda"
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    new_tokens: int = 20
    repeats: int = 3
    scale: Scale = "full"
    dtype: str = "bfloat16"
    variants: tuple[int, ...] = ()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_model(plan: RandomWeightsPlan) -> AnomalyGPT:
    """The random-weight model of the plan's scale, on its device."""
    tokenizer = offline_tokenizer()
    if plan.scale == "full":
        config, lm_config = AnomalyGPTConfig.official_7b(), vicuna_7b_config()
    else:
        config, lm_config = AnomalyGPTConfig.tiny(), tiny_llama_config(len(tokenizer))
    return build_random(config, lm_config, tokenizer, device=plan.device,
                        dtype=getattr(torch, plan.dtype))


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


@torch.no_grad()
def measure_batch(model: AnomalyGPT, batch: int, repeats: int) -> dict[str, float | None]:
    """Detection and verdict frames/s and the peak device memory at one batch size."""
    device = model.device
    _reset_peak(device)
    pixels = random_pixels(batch, seed=batch, device=str(device))
    names = [CLASSES[i % len(CLASSES)] for i in range(batch)]
    detection_s = timed(lambda: model.anomaly_maps(pixels, class_names=names), device, repeats)
    verdict_s = timed(lambda: model.verdicts(pixels, names, explain="none"), device, repeats)
    return {
        "batch": batch,
        "detection_ms": 1e3 * detection_s,
        "detection_fps": batch / detection_s,
        "verdict_ms": 1e3 * verdict_s,
        "verdict_fps": batch / verdict_s,
        "peak_gib": _peak_gib(device),
    }


@torch.no_grad()
def measure_baseline(model: AnomalyGPT, new_tokens: int, repeats: int) -> dict[str, Any]:
    """Batch 1, the verdict prefill and then the answer generated, `new_tokens` long."""
    device = model.device
    llm = model.llm
    tokenizer = llm.tokenizer
    pixels = random_pixels(1, device=str(device))

    def one_frame() -> tuple[int, int]:
        """(prompt tokens, new tokens) of one frame through the whole generation path."""
        inputs = model.prompt_inputs(pixels, CLASSES[0])
        args = (inputs.conversations, inputs.image_embeds, inputs.prompt_embeds)
        llm.verdict_logits(*args)
        embeds, mask = llm.build_inputs(*args)
        generated = llm.llama_model.generate(  # type: ignore[operator]
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=new_tokens,
            min_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        return int(embeds.shape[1]), int(generated.shape[1])

    prompt_tokens, tokens = one_frame()
    seconds = timed(one_frame, device, repeats)
    return {"new_tokens": tokens, "frame_ms": 1e3 * seconds, "fps": 1 / seconds,
            "prompt_tokens": prompt_tokens}


def summarise(report: dict[str, Any], batches: list[dict[str, Any]] | None = None
              ) -> dict[str, Any]:
    """Best rates over the batch sizes, the speed-up over the baseline and the targets."""
    rows = [r for r in (report["batches"] if batches is None else batches) if "verdict_fps" in r]
    if not rows or "baseline" not in report:
        return {}
    best_detection = max(rows, key=lambda r: r["detection_fps"])
    best_verdict = max(rows, key=lambda r: r["verdict_fps"])
    baseline_fps = report["baseline"]["fps"]
    batch_1 = next((r for r in rows if r["batch"] == 1), None)
    summary = {
        "detection_fps": best_detection["detection_fps"],
        "detection_batch": best_detection["batch"],
        "verdict_fps": best_verdict["verdict_fps"],
        "verdict_batch": best_verdict["batch"],
        "baseline_fps": baseline_fps,
        "speedup": best_verdict["verdict_fps"] / baseline_fps,
        "batch_1_peak_gib": None if batch_1 is None else batch_1["peak_gib"],
    }
    if report["scale"] == "full":
        summary["targets"] = TARGETS
        summary["met"] = {
            key: summary[key] is not None and (
                summary[key] <= limit if key == "batch_1_peak_gib" else summary[key] >= limit)
            for key, limit in TARGETS.items()
        }
    return summary


def bench_random_weights(plan: RandomWeightsPlan, json_out: Path | None = None) -> dict[str, Any]:
    """Runs the plan and returns the JSON-ready report (also written to `json_out`)."""
    device = torch.device(plan.device)
    _reset_peak(device)
    start = time.perf_counter()
    model = build_model(plan)
    _sync(device)
    report: dict[str, Any] = {
        "plan": asdict(plan),
        "scale": plan.scale,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__,
        "build_s": time.perf_counter() - start,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30,
        "batches": [],
    }

    def save() -> None:
        report["summary"] = summarise(report)
        for variant in report.get("variants", []):
            variant["summary"] = summarise(report, variant["batches"])
        if json_out is not None:
            json_out.write_text(json.dumps(report, indent=2))

    _reset_peak(device)
    report["baseline"] = {**measure_baseline(model, plan.new_tokens, plan.repeats),
                          "peak_gib": _peak_gib(device)}
    save()
    sweep(model, plan.batch_sizes, plan.repeats, report["batches"], save)
    if plan.variants:
        report["variants"] = []
        serving_forms(model, plan, report["variants"], save)
    return report


def sweep(model: AnomalyGPT, sizes: tuple[int, ...], repeats: int, rows: list[dict[str, Any]],
          save: Callable[[], None]) -> None:
    """Measures every batch size into `rows` (saved after each); stops at out-of-memory."""
    for batch in sizes:
        try:
            rows.append(measure_batch(model, batch, repeats))
        except torch.OutOfMemoryError as error:
            rows.append({"batch": batch, "error": f"out of memory: {error}"[:300]})
            save()
            return
        save()


@torch.no_grad()
def _outputs(model: AnomalyGPT, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = random_pixels(batch, seed=7, device=str(model.device))
    names = [CLASSES[i % len(CLASSES)] for i in range(batch)]
    verdicts = model.verdicts(pixels, names, explain="none")
    probability = torch.tensor([v.probability for v in verdicts])
    return probability, torch.stack([v.anomaly_map for v in verdicts])


def agreement(before: tuple[torch.Tensor, torch.Tensor],
              after: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    """How far a serving form moved P(yes) and the maps of the same frames."""
    (p0, m0), (p1, m1) = before, after
    flat0, flat1 = m0.flatten(1), m1.flatten(1)
    flat0 = flat0 - flat0.mean(1, keepdim=True)
    flat1 = flat1 - flat1.mean(1, keepdim=True)
    correlation = (flat0 * flat1).sum(1) / (flat0.norm(dim=1) * flat1.norm(dim=1)).clamp(min=1e-12)
    return {"max_abs_p_yes": float((p0 - p1).abs().max()),
            "verdicts_equal": float(((p0 > 0.5) == (p1 > 0.5)).float().mean()),
            "map_max_abs": float((m0 - m1).abs().max()),
            "map_correlation_min": float(correlation.min())}


def serving_forms(model: AnomalyGPT, plan: RandomWeightsPlan, variants: list[dict[str, Any]],
                  save: Callable[[], None]) -> None:
    """The same sweep per serving form (applied one after the other), with its agreement."""
    from inference.model.anomalygpt.serving import compile_encoder, merge_lora, quantize_fp8

    reference = _outputs(model, 16)
    forms: list[tuple[str, Callable[[], object]]] = [
        ("bf16, LoRA merged", lambda: merge_lora(model)),
        ("bf16, LoRA merged, encoder compiled", lambda: compile_encoder(model)),
        ("fp8 linears (row-wise scales), LoRA merged, encoder compiled",
         lambda: quantize_fp8(model)),
    ]
    for name, apply in forms:
        variant: dict[str, Any] = {"name": name, "batches": []}
        variants.append(variant)
        try:
            variant["applied"] = apply()
            _reset_peak(model.device)
            variant["agreement_with_bf16"] = agreement(reference, _outputs(model, 16))
            save()
            sweep(model, plan.variants, plan.repeats, variant["batches"], save)
        except Exception as error:  # noqa: BLE001 - a GPU run keeps what it measured
            variant["error"] = repr(error)[:500]
            save()
            return
