"""AnomalyGPT composed around a passed-in encoder: DINOv2-S (+ a tiny or the real SmolLM2)."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from inference.model.anomalygpt.anomalygpt_detector import AnomalyGPTDetector
from inference.model.anomalygpt.dinov2_encoder import Dinov2Encoder
from inference.model.anomalygpt.image_encoder import ZeroShotUnavailableError
from inference.model.anomalygpt.llm import LoraSettings
from inference.model.anomalygpt.model import AnomalyGPT, AnomalyGPTConfig
from inference.model.positions import NO_ANOMALY
from inference.model.testing import tiny_composition
from inference.model.weights.checkpoints import CheckpointError, is_lora_key

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),  # peft
]

TINY_LM = AnomalyGPTConfig(None, llm_hidden=16, lora=LoraSettings(r=4, alpha=4),
                           encoder_taps=(3, 5, 7, 9))


@pytest.fixture(scope="module")
def encoder(dinov2_encoder: Dinov2Encoder) -> Dinov2Encoder:
    return dinov2_encoder


def tiny(encoder: Dinov2Encoder, seed: int) -> AnomalyGPT:
    """Real DINOv2-S taps with a two-layer random LLaMA of hidden 16 (cheap checks)."""
    return tiny_composition(encoder, TINY_LM, seed=seed)


def test_a_scored_model_reads_the_score_map_above_its_floor(encoder):
    from dataclasses import replace

    model = tiny_composition(encoder, replace(TINY_LM, prompt_map="scored", prompt_floor=0.5),
                             seed=0)
    units = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 3.0, 100.0]).reshape(1, 1, 7)
    read = model.prompt_map(units, None)
    torch.testing.assert_close(read.flatten(), torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0, 4.0, 4.0]))
    pixels = torch.zeros(1, 3, 224, 224)
    maps = torch.rand(1, 224, 224)
    with pytest.raises(ValueError, match="score units"):
        model.prompt_inputs(pixels, "part", maps=maps)
    flat = model.prompt_inputs(pixels, "part", maps=maps, prompt_maps=torch.zeros(1, 224, 224))
    lit = model.prompt_inputs(pixels, "part", maps=maps,
                              prompt_maps=torch.full((1, 224, 224), 2.0))
    assert flat.maps is not None
    torch.testing.assert_close(flat.maps, maps)  # the served map is the caller's, unchanged
    assert not torch.allclose(flat.prompt_embeds, lit.prompt_embeds)
    below = model.prompt_inputs(pixels, "part", maps=maps,
                                prompt_maps=torch.full((1, 224, 224), 0.4))
    torch.testing.assert_close(below.prompt_embeds, flat.prompt_embeds)  # under the floor


def test_the_composition_takes_its_sizes_from_the_encoder(encoder):
    model = tiny(encoder, seed=0)
    assert model.encoder is encoder
    assert [tuple(fc.weight.shape) for fc in model.image_decoder.fc] == [(384, 384)] * 4
    assert tuple(model.llm.llama_proj.weight.shape) == (16, 384)
    with pytest.raises(ValueError, match="pass the image encoder"):
        AnomalyGPT(TINY_LM, model.base_lm, model.llm.tokenizer)


def test_zero_shot_maps_are_refused_with_a_clear_message(encoder):
    model = tiny(encoder, seed=0)
    pixels = torch.zeros(1, 3, 224, 224)
    wanted = "text-aligned encoder such as ImageBind"
    with pytest.raises(ZeroShotUnavailableError, match=wanted):
        model.anomaly_maps(pixels, class_names="bottle")
    with pytest.raises(ZeroShotUnavailableError, match=wanted):
        model.verdicts(pixels, "bottle", explain="none")
    maps = model.anomaly_maps(pixels, references=torch.ones(1, 3, 224, 224))
    assert tuple(maps.shape) == (1, 224, 224)


def test_delta_round_trip_is_strict(encoder, tmp_path):
    saved, fresh = tiny(encoder, seed=1), tiny(encoder, seed=2)
    path = tmp_path / "delta.pt"
    saved.save_delta(path, dtype=torch.float32)
    state = torch.load(path, weights_only=True)
    assert {k.split(".")[0] for k in state} == {"image_decoder", "prompt_learner", "llama_proj",
                                                "llama_model"}
    assert sum(is_lora_key(k) for k in state) == 2 * 4 * 2  # 2 layers, q/k/v/o, A and B
    trainable = {n for n, p in saved.named_parameters()
                 if n.startswith(("image_decoder", "prompt_learner", "llm.llama_proj"))
                 or ".lora_" in n}
    before = dict(fresh.named_parameters())
    assert any(not torch.equal(before[n], p) for n, p in saved.named_parameters()
               if n in trainable)
    applied = fresh.load_delta(path)
    assert len(applied.applied) == len(state) == len(trainable)
    after, source = dict(fresh.named_parameters()), dict(saved.named_parameters())
    for name in trainable:
        torch.testing.assert_close(after[name], source[name], rtol=0, atol=0)
    # A delta of another composition (ImageBind widths) does not load.
    state["image_decoder.fc.0.weight"] = torch.zeros(1024, 1280)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="mis-shaped image_decoder.fc.0.weight"):
        fresh.load_delta(path)


# --- the real CPU composition: DINOv2-S + SmolLM2-135M-Instruct -------------------------------


@pytest.fixture(scope="module")
def cpu_small(encoder, smollm2) -> AnomalyGPT:
    lm, tokenizer = smollm2
    torch.manual_seed(0)  # peft wraps in place: a copy keeps the session's SmolLM2 unwrapped
    return AnomalyGPT.compose(encoder=encoder, lm=copy.deepcopy(lm), tokenizer=tokenizer,
                              config=AnomalyGPTConfig.cpu_small())


@pytest.mark.slow
def test_cpu_small_verdicts_on_textile_images(cpu_small, textile_files, monkeypatch):
    model = cpu_small
    assert model.llm.hidden_size == 576
    assert tuple(model.llm.llama_proj.weight.shape) == (576, 384)
    detector = AnomalyGPTDetector(model)  # the adapter: ImageNet mean/std from the encoder
    refs = detector.pixels([Image.open(p).convert("RGB") for p in textile_files["nominal"][:2]])
    queries = [textile_files["nominal"][2], textile_files["local"][0]]
    pixels = detector.pixels([Image.open(p).convert("RGB") for p in queries])
    # The composition reads maps in score units (an evidence detector's; here the raw map
    # over a stand-in threshold of 0.4), served maps stay as they are.
    with pytest.raises(ValueError, match="score units"):
        model.prompt_inputs(pixels, "textile", refs)
    maps = model.anomaly_maps(pixels, class_names="textile", references=refs)
    read = {"maps": maps, "prompt_maps": maps / 0.4}
    inputs = model.prompt_inputs(pixels, "textile", **read)
    assert tuple(inputs.prompt_embeds.shape) == (2, 18, 576)
    assert tuple(inputs.image_embeds.shape) == (2, 384)

    prefills: list[int] = []
    generated: list[int] = []
    verdict_logits, generate = model.llm.verdict_logits, model.llm.generate
    monkeypatch.setattr(model.llm, "verdict_logits",
                        lambda c, *a, **k: prefills.append(len(c)) or verdict_logits(c, *a, **k))
    monkeypatch.setattr(model.llm, "generate",
                        lambda c, *a, **k: generated.append(len(c)) or generate(c, *a, **k))
    verdicts = model.verdicts(pixels, "textile", max_new_tokens=8, **read)
    assert prefills == [2]  # one batched prefill for both verdicts
    yes = [v.anomalous for v in verdicts]
    assert generated == ([sum(yes)] if any(yes) else [])
    for verdict in verdicts:
        assert 0.0 < verdict.probability < 1.0
        assert verdict.anomalous == (verdict.probability > 0.5)
        assert (verdict.text == NO_ANOMALY) == (not verdict.anomalous)
        assert tuple(verdict.anomaly_map.shape) == (224, 224)
    torch.testing.assert_close(torch.stack([v.anomaly_map for v in verdicts]), inputs.maps.cpu())
    # The untrained composition may say "No" to both; explain="all" makes both rows generate.
    answered = model.verdicts(pixels, "textile", explain="all", max_new_tokens=8, **read)
    assert prefills == [2, 2]
    assert generated[-1] == 2
    assert [v.probability for v in answered] == pytest.approx([v.probability for v in verdicts])
    # Untrained, a row may stop at once (an empty answer); none runs on past "###".
    assert any(v.text.strip() for v in answered)
    assert all("###" not in v.text for v in answered)
