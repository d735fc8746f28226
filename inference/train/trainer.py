"""Stage-2 trainer: decoder, prompt learner, `llama_proj` and LoRA learn; the rest is frozen.

One optimiser step = `grad_accum` micro-batches of `batch_size` samples. Per micro-batch:

1. the frozen encoder gives the taps and global embedding of the queries and their references;
2. the decoder's map per tap (learned states for a vision-only encoder, else the class's state
   prompts) → focal + dice against the mask (`losses.pixel_loss`);
3. the prompt learner reads the map the model serves (`AnomalyGPT.combine_maps`; in "replace"
   mode the few-shot map for a `few_shot_ratio` share of the batches, as the reference's coin
   flip; always for "calibrated" prompt maps, in units of the one-reference calibrated
   threshold the detector computes at inference), the LLM reads the spliced dialogue,
   cross-entropy on the answer tokens.

The first `pixel_only_steps` steps skip the LLM (the cheap part first: a decoder that already
finds the simulated defects gives the prompt learner something to read). AdamW with linear
warm-up then cosine decay to a tenth, gradient clipping at 1, bf16 autocast on CUDA. A
checkpoint holds the trained tensors in the delta layout (float32, `save_delta`) plus the
optimiser, schedule, step and RNG state, so a resumed run continues with the very next loss.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from inference.model.anomalygpt.anomalygpt_detector import (
    AnomalyGPTDetector,
    AnomalyGPTDetectorConfig,
)
from inference.model.anomalygpt.conversation import query_text
from inference.model.anomalygpt.decoder import reference_map
from inference.model.anomalygpt.llm import position_ids_for
from inference.model.anomalygpt.model import AnomalyGPT

from .lm_inputs import build_training_inputs
from .losses import IGNORE, balanced_verdict_loss, first_answer_labels, lm_loss, pixel_loss
from .samples import Sample, SampleSource

__all__ = ["TrainSettings", "Trainer", "TrainableError", "lift_below_one", "select_trainable"]

DELTA_NAME = "delta.safetensors"
STATE_NAME = "trainer_state.pt"
LOG_NAME = "loss_log.csv"
_LOG_FIELDS = ("step", "loss", "lm", "pixel", "lr", "seconds")


class TrainableError(ValueError):
    """A trainable group matches no parameter of the model (nothing would silently train)."""


@dataclass(frozen=True)
class TrainSettings:
    """How to train (the `[train]` table of the config file).

    Attributes:
        steps: Optimiser steps.
        batch_size: Samples per micro-batch.
        grad_accum: Micro-batches per optimiser step.
        lr: Peak learning rate (the reference uses 1e-3).
        weight_decay: AdamW weight decay.
        warmup_steps: Linear warm-up steps.
        pixel_only_steps: First steps train the decoder alone (no LLM).
        lm_weight: Weight of the LM loss.
        pixel_weight: Weight of the focal + dice loss.
        visible_evidence: With evidence maps: anomalous samples whose map stays below this
            (threshold units) inside their mask carry no LM loss (the LLM reads the map; what
            the map does not show teaches it only to ignore the map); 0 = all samples.
        verdict_weight: Extra weight of the first answer token (" Yes" / " No", what the
            verdict reads) on top of its share of the LM loss (0 = the reference's loss).
        verdict_balance: The verdict term weighs the "Yes" and the "No" rows of a batch half
            each (`losses.balanced_verdict_loss`) instead of by their counts.
        evidence_lift: With evidence maps: each row's map below the threshold (1.0) is raised
            to the power gamma, drawn uniformly in [1 - evidence_lift, 1] (`lift_below_one`):
            a map raised everywhere yet below the threshold, as a stochastic texture's normal
            image gives against one reference, means no more than a flat one; what is at or
            above the threshold is unchanged (0 = off).
        few_shot_ratio: "replace" mode: share of batches whose prompts read the few-shot map.
        dialogue_every: Every n-th micro-batch is a dialogue batch (0 = never).
        train_lora: Train the LoRA tensors too.
        log_every: Steps between loss-log rows.
        checkpoint_every: Steps between checkpoints (0 = only at the end).
    """

    steps: int = 100
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    pixel_only_steps: int = 0
    lm_weight: float = 1.0
    pixel_weight: float = 1.0
    verdict_weight: float = 0.0
    visible_evidence: float = 0.0
    verdict_balance: bool = False
    evidence_lift: float = 0.0
    few_shot_ratio: float = 0.5
    dialogue_every: int = 0
    train_lora: bool = True
    log_every: int = 1
    checkpoint_every: int = 0


def select_trainable(model: AnomalyGPT, *, lora: bool) -> list[nn.Parameter]:
    """Freezes everything but the decoder, prompt learner, `llama_proj` (and LoRA).

    Raises:
        TrainableError: a group that should train has no parameters.
    """
    groups = {"image_decoder": [], "prompt_learner": [], "llm.llama_proj": [], "lora": []}
    for name, param in model.named_parameters():
        param.requires_grad_(False)
        for group in ("image_decoder", "prompt_learner", "llm.llama_proj"):
            if name.startswith(f"{group}."):
                groups[group].append(param)
        if lora and ".lora_" in name:
            groups["lora"].append(param)
    wanted = [g for g in groups if g != "lora" or lora]
    empty = [g for g in wanted if not groups[g]]
    if empty:
        msg = f"no trainable parameters in {', '.join(empty)}"
        raise TrainableError(msg)
    params = [p for g in wanted for p in groups[g]]
    for param in params:
        param.requires_grad_(True)
    return params


def lift_below_one(maps: Tensor, gamma: Tensor) -> Tensor:
    """Maps in threshold units with the part below 1 raised to the power `gamma` per row.

    Monotone, and 1.0 stays 1.0: what is above the threshold stays above it (unchanged),
    what is below stays below it, raised towards it for gamma < 1.

    Args:
        maps: [B, H, W] non-negative maps in units of the threshold.
        gamma: [B] exponents in (0, 1].
    """
    powered = maps.clamp(min=0).pow(gamma.to(maps).reshape(-1, 1, 1))
    return torch.where(maps < 1.0, powered, maps)


def _pixels(images: list[np.ndarray], mean: Any, std: Any, device: torch.device) -> Tensor:
    """uint8 [S, S, 3] images → [B, 3, S, S] normalised like `preprocess.to_tensor`."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((batch - mean_t) / std_t).to(device)


class Trainer:
    """Trains a composed `AnomalyGPT` on a `SampleSource`.

    Args:
        model: The model, on its device (a GPU gets bf16 autocast).
        source: Training samples.
        settings: Steps, batch, optimiser.
        out_dir: Checkpoints, loss log and the final delta go here.
        evidence: Maps for the prompt learner and their calibrated thresholds
            (`evidence.FewShotEvidence`: the served CPU composition's); default the model's
            own few-shot map of each sample's reference.
    """

    def __init__(self, model: AnomalyGPT, source: SampleSource, settings: TrainSettings,
                 out_dir: Path, *,
                 evidence: Callable[[list[Sample]], tuple[Tensor, Tensor]] | None = None,
                 ) -> None:
        self.model = model
        self.source = source
        self.settings = settings
        self.out_dir = Path(out_dir)
        self.step = 0
        self.params = select_trainable(model, lora=settings.train_lora)
        decoder = {id(p) for p in model.image_decoder.parameters()}
        self._clip_groups = [g for g in ([p for p in self.params if id(p) in decoder],
                                         [p for p in self.params if id(p) not in decoder]) if g]
        self.optimizer = torch.optim.AdamW(self.params, lr=settings.lr,
                                           weight_decay=settings.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.device = model.device
        self._generator = torch.Generator().manual_seed(source.seed)
        self._calibrator: AnomalyGPTDetector | None = None
        self.evidence = evidence

    def _lr_factor(self, step: int) -> float:
        warmup = max(1, self.settings.warmup_steps)
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, self.settings.steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    # -- one batch ------------------------------------------------------------------------

    def samples(self, step: int, micro: int) -> list[Sample]:
        """The samples of micro-batch `micro` of step `step` (a pure function of both)."""
        size, accum = self.settings.batch_size, self.settings.grad_accum
        every = self.settings.dialogue_every
        index = step * accum + micro
        if every and self.source.conversations and index % every == every - 1:
            return [self.source.dialogue(index * size + j) for j in range(size)]
        return [self.source.sample(index * size + j) for j in range(size)]

    def losses(self, samples: list[Sample], *, with_lm: bool,
               use_few_shot: bool = True, gamma: Tensor | None = None) -> dict[str, Tensor]:
        """Loss terms of one micro-batch (with gradients).

        `gamma` [B]: with evidence maps, the rows' `lift_below_one` exponents (None = 1).

        Returns:
            {"loss", "pixel", "lm"} scalars ("lm" is 0 without the LLM).
        """
        model, encoder = self.model, self.model.encoder
        mean, std = encoder.mean, encoder.std
        with torch.no_grad():
            features = encoder.encode_image(_pixels([s.image for s in samples], mean, std,
                                                    self.device))
        decoder = model.image_decoder
        if decoder.states is not None:
            maps = decoder.learned_map(features.taps)
        else:
            text = torch.stack([model.class_text_features(s.product) for s in samples])
            maps = decoder.zero_shot_map(features.taps, text)
        target = torch.from_numpy(np.stack([s.mask for s in samples])).float().to(self.device)
        dialogue = any(s.kind == "dialogue" for s in samples)
        pixel = torch.zeros((), device=self.device) if dialogue else pixel_loss(maps.per_tap,
                                                                                  target)
        zero = torch.zeros((), device=self.device)
        if not with_lm:
            return {"loss": self.settings.pixel_weight * pixel, "pixel": pixel, "lm": zero}
        scale = None
        if self.evidence is not None:  # the served evidence map and threshold
            evidence_maps, evidence_scale = self.evidence(samples)
            prompt_map = evidence_maps.to(self.device)
            if model.config.prompt_map != "scored":  # scored maps are in threshold units
                scale = evidence_scale.to(self.device)
        elif use_few_shot or model.averages_maps or model.config.prompt_map == "calibrated":
            reference_pixels = _pixels([s.reference for s in samples], mean, std, self.device)
            with torch.no_grad():
                references = [t.unsqueeze(1) for t in encoder.encode_image(reference_pixels).taps]
            few_shot = reference_map(features.taps, references)
            prompt_map = model.combine_maps(maps.map, few_shot)
            if model.config.prompt_map == "calibrated":  # the threshold the detector serves
                scale = torch.tensor([self._threshold(s.reference) for s in samples],
                                     device=self.device)
        else:
            prompt_map = maps.map
        served = model.prompt_map(prompt_map, scale)  # [B, 224, 224] threshold units
        read = served if gamma is None or scale is None else lift_below_one(served, gamma)
        prompts = model.prompt_learner(read.unsqueeze(1))
        dialogues = [s.turns if s.turns else ((query_text(s.product), s.answer),)
                     for s in samples]
        inputs = build_training_inputs(model.llm, dialogues, features.global_embedding, prompts)
        output = model.llm.llama_model(
            inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
            position_ids=position_ids_for(inputs.attention_mask), use_cache=False,
            logits_to_keep=inputs.keep)
        labels = inputs.labels[:, -inputs.keep :]
        s = self.settings
        if s.visible_evidence and self.evidence is not None:
            labels = labels.clone()
            for row, sample in enumerate(samples):
                mask = torch.from_numpy(sample.mask).to(served.device)
                if mask.any() and float(served[row][mask].max()) < s.visible_evidence:
                    labels[row] = IGNORE  # the evidence does not show it: nothing to read
        if not (labels != IGNORE).any():
            return {"loss": s.pixel_weight * pixel, "pixel": pixel, "lm": zero}
        lm = lm_loss(output.logits, labels)
        if s.verdict_weight and s.verdict_balance and not dialogue:
            anomalous = torch.tensor([bool(sample.mask.any()) for sample in samples],
                                     device=labels.device)
            lm = lm + s.verdict_weight * balanced_verdict_loss(output.logits, labels, anomalous)
        elif s.verdict_weight:
            lm = lm + s.verdict_weight * lm_loss(output.logits, first_answer_labels(labels))
        return {"loss": s.lm_weight * lm + s.pixel_weight * pixel, "pixel": pixel, "lm": lm}

    def _threshold(self, reference: np.ndarray) -> float:
        """The calibrated map threshold of a one-image pool, exactly as the detector serves it."""
        calibrator = self._calibrator
        if calibrator is None:
            calibrator = self._calibrator = AnomalyGPTDetector(
                self.model, AnomalyGPTDetectorConfig(patch_size=self.model.encoder.patch_size))
        memory = calibrator.set_references("training", [Image.fromarray(reference)])
        return memory.calibration.threshold

    def train_step(self) -> dict[str, float]:
        """One optimiser step; returns the mean loss terms over its micro-batches."""
        self.model.train()
        self.model.encoder.eval()
        s = self.settings
        with_lm = self.step >= s.pixel_only_steps
        # "replace" mode's coin flip, drawn from a generator saved with the checkpoint.
        few_shot = bool(torch.rand((), generator=self._generator) < s.few_shot_ratio)
        self.optimizer.zero_grad(set_to_none=True)
        totals = {"loss": 0.0, "pixel": 0.0, "lm": 0.0}
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                    if self.device.type == "cuda" else torch.autocast("cpu", enabled=False))
        for micro in range(s.grad_accum):
            gamma = None
            if s.evidence_lift:  # a pure function of (seed, step, micro), as the samples are
                draw = np.random.default_rng([self.source.seed, 11, self.step, micro])
                gamma = torch.from_numpy(1.0 - s.evidence_lift * draw.random(s.batch_size))
            with autocast:
                terms = self.losses(self.samples(self.step, micro), with_lm=with_lm,
                                    use_few_shot=few_shot, gamma=gamma)
            (terms["loss"] / s.grad_accum).backward()
            for key in totals:
                totals[key] += float(terms[key].detach()) / s.grad_accum
        for group in self._clip_groups:  # the decoder's gradients apart from the LLM side's
            torch.nn.utils.clip_grad_norm_(group, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        totals["lr"] = float(self.scheduler.get_last_lr()[0])
        return totals

    # -- checkpoints ----------------------------------------------------------------------

    def save_checkpoint(self, directory: Path | None = None) -> Path:
        """Writes the trained tensors (float32 delta) and the trainer state.

        Returns:
            The directory (default ``out_dir/checkpoint-<step>``).
        """
        directory = Path(directory or self.out_dir / f"checkpoint-{self.step}")
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_delta(directory / DELTA_NAME, dtype=torch.float32)
        torch.save({
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "generator": self._generator.get_state(),
        }, directory / STATE_NAME)
        return directory

    def resume(self, directory: Path) -> None:
        """Continues from a checkpoint of the same configuration.

        Raises:
            CheckpointError: the delta does not fit the model.
            FileNotFoundError: the directory lacks the delta or the state.
        """
        directory = Path(directory)
        self.model.load_delta(directory / DELTA_NAME)
        state = torch.load(directory / STATE_NAME, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        self._generator.set_state(state["generator"])

    def latest_checkpoint(self) -> Path | None:
        """The highest-step checkpoint in `out_dir`, if any."""
        found = sorted(self.out_dir.glob("checkpoint-*"),
                       key=lambda p: int(p.name.split("-")[1]) if p.name.split("-")[1].isdigit()
                       else -1)
        return found[-1] if found else None

    # -- the loop -------------------------------------------------------------------------

    def run(self, *, progress: bool = True) -> Iterator[dict[str, float]]:
        """Trains to `settings.steps`, yielding each step's losses; logs, checkpoints."""
        from tqdm import tqdm

        self.out_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.out_dir / LOG_NAME
        new_log = not log_path.exists()
        started = time.perf_counter()
        bar = tqdm(total=self.settings.steps, initial=self.step, disable=not progress,
                   unit="step", dynamic_ncols=True)
        with log_path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=_LOG_FIELDS)
            if new_log:
                writer.writeheader()
            while self.step < self.settings.steps:
                terms = self.train_step()
                bar.update(1)
                bar.set_postfix(loss=f"{terms['loss']:.3f}", lm=f"{terms['lm']:.3f}",
                                pixel=f"{terms['pixel']:.3f}")
                if self.step % self.settings.log_every == 0 or self.step == self.settings.steps:
                    writer.writerow({"step": self.step, **{k: f"{terms[k]:.6f}" for k in
                                                          ("loss", "lm", "pixel", "lr")},
                                     "seconds": f"{time.perf_counter() - started:.1f}"})
                    handle.flush()
                every = self.settings.checkpoint_every
                if every and self.step % every == 0 and self.step < self.settings.steps:
                    self.save_checkpoint()
                yield terms
        bar.close()

    def export(self, path: Path, *, dtype: torch.dtype = torch.float16) -> Path:
        """Writes the final delta (trained tensors only, delta layout) to `path`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cast("AnomalyGPT", self.model).save_delta(path, dtype=dtype)
        return path
