"""`agpt bench model`: model-only throughput and memory, with side-by-side ratios.

The machine is noisy, so every figure that matters is reported next to a reference measured
in the same run: the full detector (features + few-shot map + mask + answer) beside the
backbone alone, the profile's backbone (int8 where the profile quantizes) beside the same
backbone in fp32, and the detector with its stream memory (window full) beside the same
detector with the stream off.
"""

from __future__ import annotations

import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch
from PIL import Image

from agpt import wiring
from agpt.settings import Settings


def measure_rate(fn: Callable[[], object], frames_per_call: int, seconds: float) -> float:
    """Frames/s of calling ``fn`` (``frames_per_call`` each) repeatedly for ``seconds``."""
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
    from inference.model.fewshot.dinov2 import PatchFeatureExtractor, load_dinov2_small
    from inference.model.fewshot.fewshot_detector import FewShotDetector

    wiring.configure_torch(settings)
    profile = wiring.model_profile(settings)
    detector = wiring.detector(settings)
    rss_after_load = peak_rss_mb()
    references = _bench_images(4)
    detector.set_references("bench", references)
    batch = _bench_images(4 + batch_size)[4:]
    pixels = detector.pixels(batch)
    fewshot = detector if isinstance(detector, FewShotDetector) else None
    window = fewshot.config.stream_window if fewshot is not None else 0
    stream = fewshot.stream("bench") if fewshot is not None else None
    while stream is not None and len(stream) < window:  # measure with a full window
        detector.detect("bench", batch)

    stream_report: dict[str, object] = {"stream_window": window}
    if fewshot is None or stream is None:
        full = measure_rate(lambda: detector.detect("bench", batch), batch_size, seconds)
    else:
        # The same backbone and pool without the stream, measured in alternating rounds
        # (median of three each): the machine's load drifts within a run.
        plain = FewShotDetector(fewshot.extractor, replace(fewshot.config, stream_window=0),
                                device=fewshot.device)
        plain.set_references("bench", references)
        on, off = [], []
        for _ in range(3):
            on.append(measure_rate(lambda: detector.detect("bench", batch), batch_size,
                                   seconds / 3))
            off.append(measure_rate(lambda: plain.detect("bench", batch), batch_size,
                                    seconds / 3))
        full, stream_off = statistics.median(on), statistics.median(off)
        stream_report["stream_window_mb"] = round(stream.nbytes() / 2**20, 1)
        stream_report["frames_per_s_stream_off"] = round(stream_off, 2)
        stream_report["ratio_stream_on_over_off"] = round(full / stream_off, 3)
    # The backbone is the few-shot detector's: the detector itself, or the one whose map the
    # CPU LLM reads (`AnomalyGPTDetector.evidence_detector`, the cpu-small default).
    maps = fewshot if fewshot is not None else getattr(detector, "evidence_detector", None)
    if not isinstance(maps, FewShotDetector):
        msg = f"agpt bench model measures few-shot backbones; {settings.profile!r} has none"
        raise TypeError(msg)
    backbone = measure_rate(lambda: maps.features(pixels), batch_size, seconds)
    rss_worker = peak_rss_mb()  # model + references + batches: what a worker holds
    fp32_extractor = PatchFeatureExtractor(load_dinov2_small(settings.cache_dir),
                                           profile.tap_layers).eval()
    maps.extractor = fp32_extractor
    backbone_fp32 = measure_rate(lambda: maps.features(pixels), batch_size, seconds / 2)
    return {
        "profile": settings.profile,
        "verdict_source": detector.verdict_source,
        "model_id": detector.config.model_id,
        "image_size": detector.config.image_size,
        "taps": list(profile.tap_layers),
        "quantized_int8": profile.quantize,
        "batch_size": batch_size,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "frames_per_s": round(full, 2),
        "backbone_frames_per_s": round(backbone, 2),
        "backbone_frames_per_s_fp32": round(backbone_fp32, 2),
        "ratio_full_over_backbone": round(full / backbone, 3),
        "ratio_profile_over_fp32_backbone": round(backbone / backbone_fp32, 3),
        "peak_rss_mb_model_loaded": round(rss_after_load, 1),
        "peak_rss_mb_worker": round(rss_worker, 1),
        **stream_report,
    }
