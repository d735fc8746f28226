"""Tiny random checkpoints in the four official file formats, for the anomalygpt-7b chain.

The same pieces `test_anomalygpt.py` writes (ImageBind state dict, a Hugging Face LLaMA
directory with its tokenizer, a PandaGPT delta without `.default`, an fp16 AnomalyGPT delta),
at `AnomalyGPTConfig.tiny()` sizes, without needing a built model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from inference.model.anomalygpt.anomalygpt_detector import AnomalyGPTDetector
from inference.model.anomalygpt.decoder import ImageDecoder
from inference.model.anomalygpt.model import AnomalyGPTConfig
from inference.model.anomalygpt.prompt_learner import PromptLearner
from inference.model.testing import fill_random_
from inference.profiles import OfficialFiles, build_anomalygpt_detector, get_profile
from tests.inference.model.anomalygpt.imagebind_reference import official_state_dict
from tests.inference.model.anomalygpt.test_anomalygpt import tiny_lm_config
from tests.inference.model.weights.test_checkpoints import (
    delta_state,
    pandagpt_state,
    tiny_peft_llama,
)

TINY = AnomalyGPTConfig.tiny()


def write_tiny_official(root: Path, tokenizer: PreTrainedTokenizerBase, *, seed: int = 8,
                        lm_std: float = 0.3, prompt_gain: float = 10.0) -> OfficialFiles:
    """Writes the four files under ``root`` with random tiny weights.

    LM matrices are N(0, lm_std) and the prompt learner's weights scaled by ``prompt_gain``,
    so that the map reaches the verdict: with the defaults, `part_image` parts without and
    with a defect get P(yes) of about 0.84 and 0.24 (random weights: the verdicts are
    inverted, which is fine for tests of the plumbing, and both kinds occur).
    """
    root.mkdir(parents=True, exist_ok=True)
    files = OfficialFiles(imagebind=root / "imagebind_huge.pth", llm=root / "vicuna",
                          pandagpt=root / "pandagpt.pt", anomalygpt=root / "anomalygpt.pt")
    torch.save(official_state_dict(TINY.imagebind, seed=seed), files.imagebind)
    lm = LlamaForCausalLM(tiny_lm_config(len(tokenizer)))
    fill_random_(lm, std=lm_std, seed=seed + 1)  # large enough that images get both verdicts
    lm.save_pretrained(files.llm)
    tokenizer.save_pretrained(files.llm)
    lora_shapes, _ = tiny_peft_llama()  # LoRA r 4 on a LLaMA of the same attention shapes
    torch.save(pandagpt_state(lora_shapes, default=False, seed=seed + 2), files.pandagpt)
    ib = TINY.imagebind
    torch.manual_seed(seed + 3)
    decoder = ImageDecoder(ib.vision_width, ib.embed_dim, len(ib.tap_layers))
    delta = delta_state(decoder, PromptLearner(TINY.llm_hidden))
    for key, value in delta.items():  # louder prompts: the verdict then follows the map
        if key.startswith("prompt_learner.meta_net.") and key.endswith(".weight"):
            delta[key] = value * prompt_gain
    torch.save({k: v.half() for k, v in delta.items()}, files.anomalygpt)  # released: fp16
    return files


def part_image(seed: int, *, defect: bool = False, size: int = 224) -> Image.Image:
    """A striped, noisy "part"; with ``defect``, a red disc in the top-left cell."""
    rng = np.random.default_rng(seed)
    stripes = (np.indices((size, size)).sum(0) % 16 < 8) * 120.0 + 60.0
    rgb = np.stack([stripes, 0.8 * stripes, 0.6 * stripes], -1) + rng.normal(0, 10, (size, size, 3))
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    if defect:
        ImageDraw.Draw(image).ellipse((30, 30, 80, 80), fill=(255, 0, 0))
    return image


def defect_mask(size: int = 224) -> Image.Image:
    """The ground-truth mask of `part_image(..., defect=True)`."""
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse((30, 30, 80, 80), fill=255)
    return mask


OFFICIAL_ENV = {"imagebind": "AGPT_IMAGEBIND_CHECKPOINT", "llm": "AGPT_LLM_DIR",
                "pandagpt": "AGPT_PANDAGPT_CHECKPOINT", "anomalygpt": "AGPT_ANOMALYGPT_CHECKPOINT"}


def use_tiny_official(monkeypatch: pytest.MonkeyPatch, files: OfficialFiles) -> None:
    """Point the anomalygpt-7b settings at tiny files, on the CPU in float32.

    The only change to the real path (settings → wiring → `from_official`) is the model
    size: `AnomalyGPTConfig.official_7b` returns the tiny configuration.
    """
    for key, env in OFFICIAL_ENV.items():
        monkeypatch.setenv(env, str(getattr(files, key)))
    monkeypatch.setenv("AGPT_DTYPE", "float32")
    monkeypatch.setenv("AGPT_DEVICE", "cpu")
    monkeypatch.setenv("AGPT_PROFILE", "anomalygpt-7b")
    monkeypatch.setattr(AnomalyGPTConfig, "official_7b", classmethod(lambda cls: TINY))


def build_tiny_detector(files: OfficialFiles) -> AnomalyGPTDetector:
    """The anomalygpt-7b profile's detector built from tiny official files (CPU, float32)."""
    return build_anomalygpt_detector(get_profile("anomalygpt-7b"), files, device="cpu",
                                     dtype="float32", config=TINY)
