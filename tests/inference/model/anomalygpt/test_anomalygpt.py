"""AnomalyGPT composed (tiny, random): batched verdicts, map paths, dialogue, official loading."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from inference.model.anomalygpt.conversation import Conversation, query_text
from inference.model.anomalygpt.decoder import ImageDecoder, reference_map
from inference.model.anomalygpt.imagebind import official_name_map
from inference.model.anomalygpt.model import YES_PLAIN, AnomalyGPT, AnomalyGPTConfig
from inference.model.anomalygpt.prompt_learner import PromptLearner
from inference.model.anomalygpt.state_prompts import text_features
from inference.model.positions import NO_ANOMALY
from inference.model.testing import build_random, offline_tokenizer, random_pixels
from inference.model.weights.checkpoints import is_lora_key, lora_key_map
from tests.inference.model.anomalygpt.imagebind_reference import official_state_dict
from tests.inference.model.weights.test_checkpoints import LAYERS, delta_state, pandagpt_state

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),  # peft
]

TINY = AnomalyGPTConfig.tiny()
NAMES = ["bottle", "metal_nut", "transistor"]  # questions of different lengths: left padding
NEW_TOKENS = 6
Files = dict[str, Path]


def tiny_lm_config(vocab_size: int) -> LlamaConfig:
    """Two LLaMA layers of hidden 16, the shapes of the `test_checkpoints` deltas."""
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=TINY.llm_hidden, intermediate_size=32,
        num_hidden_layers=LAYERS, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=256, tie_word_embeddings=False,
    )


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return offline_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerFast) -> AnomalyGPT:
    """Random weights large enough (std 0.3) that the three rows get different verdicts."""
    return build_random(TINY, tiny_lm_config(len(tokenizer)), tokenizer, device="cpu",
                        dtype=torch.float32, std=0.3, seed=1)


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return random_pixels(3, seed=1)


@pytest.fixture(scope="module")
def references() -> torch.Tensor:
    return random_pixels(2, seed=5)


def assert_batch_matches_singles(model: AnomalyGPT, pixels: torch.Tensor, refs=None) -> None:
    batch = model.verdicts(pixels, NAMES, refs, max_new_tokens=NEW_TOKENS)
    anomalous = [v.anomalous for v in batch]
    assert any(anomalous), f"need both verdicts, got {anomalous}"
    assert not all(anomalous), f"need both verdicts, got {anomalous}"
    for i, got in enumerate(batch):
        (single,) = model.verdicts(pixels[i : i + 1], NAMES[i], refs, max_new_tokens=NEW_TOKENS)
        assert abs(got.probability - single.probability) <= 1e-4
        assert got.anomalous == single.anomalous == (got.probability > 0.5)
        torch.testing.assert_close(got.anomaly_map, single.anomaly_map, rtol=0, atol=1e-5)
        assert got.score == pytest.approx(float(got.anomaly_map.max()))
        assert got.anomaly_map.shape == (224, 224)
        assert (got.text, got.positions) == (single.text, single.positions)
        # Normal rows keep the fixed sentence; anomalous rows generate theirs.
        assert (got.text == NO_ANOMALY) == (not got.anomalous)
        assert "###" not in got.text


def test_zero_shot_batch_of_three_matches_single_images(model, pixels):
    inputs = model.prompt_inputs(pixels, NAMES)
    _, mask = model.llm.build_inputs(*inputs[:3])
    assert (mask[:, 0] == 0).any()  # a shorter question is left-padded
    assert_batch_matches_singles(model, pixels)


def test_few_shot_batch_of_three_matches_single_images(model, pixels, references):
    assert_batch_matches_singles(model, pixels, references)


def test_few_shot_map_replaces_the_zero_shot_map(model, pixels, references):
    maps = model.anomaly_maps(pixels, class_names=NAMES, references=references)
    with torch.no_grad():
        query = model.encoder.encode_image(pixels).taps
        expected = reference_map(query, model.encoder.encode_image(references).taps, 224)
    torch.testing.assert_close(maps, expected)
    assert not torch.allclose(maps, model.anomaly_maps(pixels, class_names=NAMES), atol=1e-3)
    torch.testing.assert_close(model.prompt_inputs(pixels, NAMES, references).maps, maps)
    # Precomputed reference taps and per-image references give the same map.
    taps = model.encode_references(references)
    torch.testing.assert_close(model.anomaly_maps(pixels, references=taps), maps)
    per_image = references.unsqueeze(0).expand(3, -1, -1, -1, -1)
    torch.testing.assert_close(model.anomaly_maps(pixels, references=per_image), maps)


def test_zero_shot_map_uses_each_class_state_prompts_once(model, pixels, monkeypatch):
    calls: list[int] = []
    encode_text = model.encoder.encode_text
    monkeypatch.setattr(model.encoder, "encode_text",
                        lambda ids: calls.append(len(ids)) or encode_text(ids))
    names = ["wood_plank", "hazelnut", "wood_plank"]
    maps = model.anomaly_maps(pixels, class_names=names)
    assert calls == [14, 10, 14, 10]  # normal and abnormal sentences of two classes
    model.anomaly_maps(pixels, class_names=names)
    assert len(calls) == 4  # cached
    with torch.no_grad():
        taps = model.encoder.encode_image(pixels).taps
        for i, name in enumerate(names):
            row = [t[i : i + 1] for t in taps]
            text = text_features(model.encoder, name)
            expected = model.image_decoder.zero_shot_map(row, text, 224).map[0]
            torch.testing.assert_close(maps[i], expected)
    with pytest.raises(ValueError, match="class_names"):
        model.anomaly_maps(pixels)


def test_explain_chooses_the_rows_that_generate(model, pixels, monkeypatch):
    seen: list[int] = []

    def fake_generate(conversations, image_embeds, prompt_embeds, **kwargs):
        assert len(conversations) == len(image_embeds) == len(prompt_embeds)
        seen.append(len(conversations))
        return ["Yes, there is an anomaly in the image, at the top left of the image."] * len(
            conversations
        )

    monkeypatch.setattr(model.llm, "generate", fake_generate)
    quiet = model.verdicts(pixels, NAMES, explain="none")
    assert seen == []
    assert [v.text for v in quiet] == [YES_PLAIN if v.anomalous else NO_ANOMALY for v in quiet]
    everyone = model.verdicts(pixels, NAMES, explain="all")
    assert seen == [3]
    assert all(v.positions == ["top left"] for v in everyone)
    model.verdicts(pixels, NAMES)
    assert seen == [3, sum(v.anomalous for v in quiet)]
    with pytest.raises(ValueError, match="explain"):
        model.verdicts(pixels, NAMES, explain="some")  # type: ignore[arg-type]


def test_chat_continues_the_dialogue(model, pixels):
    conversation = Conversation.start(query_text("a bottle", "round"))
    first = model.chat(conversation, pixels[0], class_name="bottle", max_new_tokens=NEW_TOKENS)
    conversation.ask("Where is the anomaly?")
    second = model.chat(conversation, pixels[0], max_new_tokens=NEW_TOKENS)
    assert [t.answer for t in conversation.turns] == [first.strip(), second.strip()]
    assert "###" not in first + second
    with pytest.raises(ValueError, match="one image"):
        model.chat(Conversation.start("Hi"), pixels[:2])


# --- from_official on tiny files in the official layouts ---------------------------------------


@pytest.fixture(scope="module")
def official_files(tmp_path_factory, model: AnomalyGPT, tokenizer) -> Files:
    root = tmp_path_factory.mktemp("official")
    files = {"imagebind": root / "imagebind_huge.pth", "llm": root / "vicuna",
             "pandagpt": root / "pandagpt.pt", "anomalygpt": root / "anomalygpt.pt"}
    torch.save(official_state_dict(TINY.imagebind, seed=0), files["imagebind"])
    torch.manual_seed(3)
    LlamaForCausalLM(tiny_lm_config(len(tokenizer))).save_pretrained(files["llm"])
    tokenizer.save_pretrained(files["llm"])
    torch.save(pandagpt_state(model.llm.llama_model, default=False, seed=4), files["pandagpt"])
    ib = TINY.imagebind
    torch.manual_seed(5)
    decoder = ImageDecoder(ib.vision_width, ib.embed_dim, len(ib.tap_layers))
    delta = delta_state(decoder, PromptLearner(TINY.llm_hidden))
    torch.save({k: v.half() for k, v in delta.items()}, files["anomalygpt"])  # released: fp16
    return files


def load(files: Files, dtype: torch.dtype = torch.float32) -> AnomalyGPT:
    return AnomalyGPT.from_official(files["imagebind"], files["llm"], files["pandagpt"],
                                    files["anomalygpt"], device="cpu", dtype=dtype, config=TINY)


def test_from_official_fills_every_tensor_from_the_files(official_files):
    loaded = load(official_files)
    params = dict(loaded.named_parameters())
    checked: set[str] = set()

    def check(name: str, value: torch.Tensor) -> None:
        torch.testing.assert_close(params[name], value.float(), rtol=0, atol=0)
        checked.add(name)

    imagebind = torch.load(official_files["imagebind"], weights_only=True)
    for key, name in official_name_map(TINY.imagebind).items():
        if f"encoder.{name}" in params:
            check(f"encoder.{name}", imagebind[key])
    torch.testing.assert_close(loaded.encoder.text.causal_mask,
                               imagebind["modality_preprocessors.text.mask"])
    lm = load_file(official_files["llm"] / "model.safetensors")
    prefix = "llm.llama_model.base_model.model."
    for name in params:
        if name.startswith(prefix) and ".lora_" not in name:
            check(name, lm[name.removeprefix(prefix).replace(".base_layer.", ".")])
    for key, value in torch.load(official_files["pandagpt"], weights_only=True).items():
        check(f"llm.llama_model.{lora_key_map(key)}" if is_lora_key(key) else f"llm.{key}", value)
    for key, value in torch.load(official_files["anomalygpt"], weights_only=True).items():
        check(key, value)
    assert checked == set(params)  # nothing left uninitialised

    rotary = LlamaForCausalLM(tiny_lm_config(len(loaded.llm.tokenizer))).model.rotary_emb
    torch.testing.assert_close(loaded.base_lm.model.rotary_emb.inv_freq, rotary.inv_freq)
    assert loaded.llm.tokenizer("a").input_ids[0] == loaded.llm.tokenizer.bos_token_id

    half = load(official_files, torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert half.base_lm.model.rotary_emb.inv_freq.dtype == torch.float32
    (verdict,) = half.verdicts(random_pixels(1), "bottle", explain="none")
    assert 0.0 <= verdict.probability <= 1.0


def _drop(key: str) -> Callable[[dict], None]:
    return lambda state: state.pop(key)


@pytest.mark.parametrize(
    ("which", "edit", "message"),
    [
        ("imagebind", _drop("modality_trunks.vision.blocks.1.mlp.fc2.weight"),
         "missing modality_trunks.vision.blocks.1.mlp.fc2.weight"),
        ("llm", _drop("model.layers.1.self_attn.o_proj.weight"),
         "missing model.layers.1.self_attn.o_proj.weight"),
        ("llm", lambda s: s.update({"model.layers.2.mlp.up_proj.weight": torch.zeros(32, 16)}),
         "unexpected model.layers.2.mlp.up_proj.weight"),
        ("pandagpt", _drop("llama_model.base_model.model.model.layers.0.self_attn.v_proj"
                           ".lora_B.weight"),
         "missing llama_model.base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"),
        ("anomalygpt", _drop("prompt_learner.meta_net.15.bias"),
         "missing prompt_learner.meta_net.15.bias"),
    ],
)
def test_from_official_names_what_does_not_fit(official_files, tmp_path, which, edit, message):
    files = dict(official_files)
    if which == "llm":
        files["llm"] = tmp_path / "llm"
        shutil.copytree(official_files["llm"], files["llm"])
        state = load_file(files["llm"] / "model.safetensors")
        edit(state)
        save_file(state, files["llm"] / "model.safetensors", metadata={"format": "pt"})
    else:
        state = torch.load(official_files[which], weights_only=True)
        edit(state)
        files[which] = tmp_path / official_files[which].name
        torch.save(state, files[which])
    with pytest.raises(ValueError, match=re.escape(message)):
        load(files)
