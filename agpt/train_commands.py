"""`agpt train --config FILE`: stage-2 training, ending in a delta file.

The decoder, prompt learner, `llama_proj` and LoRA learn from simulated anomalies
(`inference/train`); everything else stays frozen.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

from agpt import wiring
from agpt.settings import Settings, SettingsError


def build_model(profile: str, settings: Settings, *, init_seed: int,  # noqa: ANN201
                readable_prompts: bool = False):
    """The composition to train, fresh trainable parts drawn from `init_seed`.

    cpu-small: DINOv2-S + SmolLM2-135M (`AnomalyGPTConfig.cpu_small`); with
    `readable_prompts` its prompt learner starts at the norm of SmolLM2's word embeddings
    (`PromptLearner.init_readable`). anomalygpt-7b: the
    released model from the four official files (fine-tuning its delta), frozen parts in the
    settings' dtype, trained parts in float32.
    """
    from inference.model.anomalygpt.model import AnomalyGPT, AnomalyGPTConfig

    if profile == "cpu-small":
        from inference.model.anomalygpt.dinov2_encoder import Dinov2Encoder
        from inference.model.fewshot.dinov2 import load_dinov2_small
        from inference.model.weights.smollm import load_smollm2

        config = AnomalyGPTConfig.cpu_small()
        encoder = Dinov2Encoder(load_dinov2_small(settings.cache_dir), config.encoder_taps or ())
        lm, tokenizer = load_smollm2(settings.cache_dir)
        torch.manual_seed(init_seed)
        model = AnomalyGPT.compose(encoder=encoder, lm=lm, tokenizer=tokenizer, config=config)
        if readable_prompts:
            norms = lm.get_input_embeddings().weight.detach().norm(dim=-1)
            model.prompt_learner.init_readable(float(norms.mean()))
        return model.to(settings.device)
    from inference.profiles import parse_dtype

    files = wiring.official_files(settings)
    model = AnomalyGPT.from_official(files.imagebind, files.llm, files.pandagpt,
                                     files.anomalygpt, device=settings.device,
                                     dtype=parse_dtype(settings.dtype or "bfloat16"))
    for module in (model.image_decoder, model.prompt_learner, model.llm.llama_proj):
        module.float()
    for name, param in model.named_parameters():
        if ".lora_" in name:
            param.data = param.data.float()
    return model


def run_train(settings: Settings, args: argparse.Namespace) -> int:
    """Trains per the config file; writes checkpoints, the loss log and the final delta."""
    from inference.train.config import ConfigError, load_config
    from inference.train.samples import SampleSource
    from inference.train.trainer import Trainer

    try:
        config = load_config(Path(args.config))
    except ConfigError as err:
        print(f"agpt train: {err}", file=sys.stderr)
        return 2
    wiring.configure_logging("WARNING")
    wiring.configure_torch(settings)
    try:
        model = build_model(config.profile, settings, init_seed=config.init_seed,
                            readable_prompts=config.readable_prompts)
    except SettingsError as err:
        print(f"agpt train: {err}", file=sys.stderr)
        return 2
    source = SampleSource(config.products, seed=config.seed, anomaly_ratio=config.anomaly_ratio,
                          kinds=config.kinds, real_ratio=config.real_ratio,
                          conversations=config.conversations, shots=config.shots,
                          pools_per_product=config.pools_per_product)
    evidence = None
    if config.evidence is not None:
        from inference.profiles import Profile, build_detector, get_profile
        from inference.train.evidence import FewShotEvidence

        profile = get_profile(config.evidence)
        if not isinstance(profile, Profile):
            print(f"agpt train: [model] evidence {config.evidence!r} is not a few-shot profile",
                  file=sys.stderr)
            return 2
        detector = build_detector(profile, cache_dir=settings.cache_dir,
                                  device=settings.device, stream_window=0)
        evidence = FewShotEvidence(detector, source.pool,
                                   scored=model.config.prompt_map == "scored")
    trainer = Trainer(model, source, config.train, config.out_dir, evidence=evidence)
    if args.resume:
        latest = trainer.latest_checkpoint()
        if latest is not None:
            trainer.resume(latest)
            print(f"resumed from {latest} at step {trainer.step}")
    print(f"training {config.profile} on {len(config.products)} products "
          f"({', '.join(config.sources)}), {config.train.steps} steps -> {config.delta}")
    started = time.perf_counter()
    last: dict[str, float] = {}
    for terms in trainer.run(progress=not args.no_progress):
        last = copy.copy(terms)
    trainer.export(config.delta)
    seconds = time.perf_counter() - started
    print(f"done: step {trainer.step}, loss {last.get('loss', float('nan')):.4f} "
          f"(lm {last.get('lm', float('nan')):.4f}, pixel {last.get('pixel', float('nan')):.4f}) "
          f"in {seconds:.0f} s; delta {config.delta}; log {config.out_dir / 'loss_log.csv'}")
    return 0
