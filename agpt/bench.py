"""`agpt bench model`: model-only throughput and memory, with side-by-side ratios.

The machine is noisy, so every figure that matters is reported next to a reference measured
in the same run: the full detector (features + few-shot map + mask + answer) beside the
backbone alone, and bf16 autocast beside fp32.
"""

from __future__ import annotations

import platform
import resource
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from PIL import Image

from agpt import wiring
from agpt.settings import Settings


def _rate(fn: Callable[[], None], frames_per_call: int, seconds: float) -> float:
    fn()  # warm-up (allocations, oneDNN kernel selection)
    calls = 0
    started = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return calls * frames_per_call / elapsed


def _bench_images(count: int) -> list[Image.Image]:
    import conformal_clip_data as data

    from ingest.sources import image_files

    paths = image_files(data.nominal_dir())[:count]
    return [Image.open(p).convert("RGB") for p in paths]


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_model(settings: Settings, *, batch_size: int, seconds: float) -> dict[str, object]:
    """Measure frames/s of the configured profile on real textile images.

    Returns:
        A JSON-ready report.
    """
    wiring.configure_torch(settings)
    detector = wiring.detector(settings)
    references = _bench_images(4)
    detector.set_references("bench", references)
    batch = _bench_images(4 + batch_size)[4:]
    pixels = detector.pixels(batch)

    full_bf16 = _rate(lambda: detector.detect("bench", batch), batch_size, seconds)
    backbone_bf16 = _rate(lambda: detector.features(pixels), batch_size, seconds)
    bf16_config = detector.config
    detector.config = replace(bf16_config, bf16=False)
    backbone_fp32 = _rate(lambda: detector.features(pixels), batch_size, seconds / 2)
    detector.config = bf16_config
    return {
        "profile": settings.profile,
        "model_id": detector.config.model_id,
        "image_size": detector.config.image_size,
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "frames_per_s": round(full_bf16, 2),
        "backbone_frames_per_s_bf16": round(backbone_bf16, 2),
        "backbone_frames_per_s_fp32": round(backbone_fp32, 2),
        "ratio_full_over_backbone": round(full_bf16 / backbone_bf16, 3),
        "ratio_bf16_over_fp32": round(backbone_bf16 / backbone_fp32, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
