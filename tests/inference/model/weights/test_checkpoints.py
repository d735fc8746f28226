"""Official delta formats: key names, strict loading, round trips and the lazy file check."""

import pickle

import pytest
import torch
from torch import nn

from inference.model.anomalygpt.decoder import ImageDecoder
from inference.model.anomalygpt.imagebind import ImageBindConfig
from inference.model.anomalygpt.prompt_learner import PromptLearner
from inference.model.weights.checkpoints import (
    is_lora_key,
    load_anomalygpt_delta,
    load_pandagpt_delta,
    lora_key_map,
    save_anomalygpt_delta,
)

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing`:FutureWarning")

HIDDEN, LAYERS, RANK = 16, 2, 4
IMAGE_EMBED = ImageBindConfig.tiny().embed_dim  # llama_proj input width in the tiny deltas
OFFICIAL = "llama_model.base_model.model.model.layers.{i}.self_attn.{p}_proj.lora_{x}{d}.weight"


def modules(seed: int, hidden: int = HIDDEN) -> tuple[ImageDecoder, PromptLearner]:
    torch.manual_seed(seed)
    return ImageDecoder(12, 8, taps=4), PromptLearner(dim_out=hidden)


def delta_state(decoder: nn.Module, learner: nn.Module) -> dict[str, torch.Tensor]:
    state = {f"image_decoder.{k}": v.clone() for k, v in decoder.state_dict().items()}
    return state | {f"prompt_learner.{k}": v.clone() for k, v in learner.state_dict().items()}


def tiny_peft_llama():
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    config = transformers.LlamaConfig(vocab_size=32, hidden_size=HIDDEN, intermediate_size=32,
                                      num_hidden_layers=LAYERS, num_attention_heads=2,
                                      num_key_value_heads=1)
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(config)
    lora = peft.LoraConfig(r=RANK, lora_alpha=RANK, lora_dropout=0.1,
                           target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    return peft.get_peft_model(base, lora), base


def pandagpt_state(peft_model: nn.Module, *, default: bool, seed: int = 1) -> dict:
    """A PandaGPT-layout delta with random values fitting `peft_model`."""
    gen = torch.Generator().manual_seed(seed)
    state = {"llama_proj.weight": torch.randn(HIDDEN, IMAGE_EMBED, generator=gen),
             "llama_proj.bias": torch.randn(HIDDEN, generator=gen)}
    params = dict(peft_model.named_parameters())
    for i in range(LAYERS):
        for p in "qkvo":
            for x in "AB":
                peft_name = lora_key_map(OFFICIAL.format(i=i, p=p, x=x, d=""))
                key = OFFICIAL.format(i=i, p=p, x=x, d=".default" if default else "")
                state[key] = torch.randn(params[peft_name].shape, generator=gen).half()
    return state


def test_lora_key_map_accepts_both_spellings():
    want = "base_model.model.model.layers.3.self_attn.k_proj.lora_B.default.weight"
    for d in ("", ".default"):
        key = OFFICIAL.format(i=3, p="k", x="B", d=d)
        assert is_lora_key(key)
        assert lora_key_map(key) == want
    assert not is_lora_key("llama_proj.weight")
    with pytest.raises(ValueError, match="not an official LoRA key"):
        lora_key_map("llama_model.base_model.model.model.layers.0.mlp.up_proj.lora_A.weight")


def test_round_trip_writes_the_official_layout_and_loads_strictly(tmp_path):
    decoder, learner = modules(0)
    path = tmp_path / "pytorch_model.pt"
    save_anomalygpt_delta(path, decoder=decoder, prompt_learner=learner)
    saved = torch.load(path, weights_only=True)
    assert sorted(saved) == sorted(
        [f"image_decoder.fc.{i}.{w}" for i in range(4) for w in ("weight", "bias")]
        + [f"prompt_learner.meta_net.{i}.{w}" for i in (0, 3, 6, 9, 12, 15)
           for w in ("weight", "bias")]
        + ["prompt_learner.base_prompts"]
    )
    assert {v.dtype for v in saved.values()} == {torch.float16}

    fresh_decoder, fresh_learner = modules(1)
    result = load_anomalygpt_delta(path, decoder=fresh_decoder, prompt_learner=fresh_learner)
    assert sorted(result.applied) == sorted(saved)
    assert not result.llama_proj
    assert not result.lora
    for key, value in delta_state(fresh_decoder, fresh_learner).items():
        assert value.dtype == torch.float32  # copied into the target's dtype
        torch.testing.assert_close(value, saved[key].float())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("prompt_learner.meta_net.15.bias"),
         "missing prompt_learner.meta_net.15.bias"),
        (lambda s: s.update({"image_decoder.fc.2.weight": torch.zeros(8, 13)}),
         r"mis-shaped image_decoder.fc.2.weight: \(8, 13\), expected \(8, 12\)"),
        (lambda s: s.update({"image_decoder.fc.4.weight": torch.zeros(8, 12)}),
         "unexpected image_decoder.fc.4.weight"),
        (lambda s: s.update({"prompt_learner.base_prompts": torch.zeros(9, HIDDEN).long()}),
         "non-floating prompt_learner.base_prompts"),
    ],
)
def test_a_bad_delta_fails_naming_the_key_and_copies_nothing(edit, message):
    decoder, learner = modules(0)
    state = delta_state(*modules(1))
    edit(state)
    before = delta_state(decoder, learner)
    with pytest.raises(ValueError, match=message):
        load_anomalygpt_delta(state, decoder=decoder, prompt_learner=learner)
    for key, value in delta_state(decoder, learner).items():
        torch.testing.assert_close(value, before[key])


class Payload:
    """Stands for any non-tensor object a pickle could smuggle in."""


def test_weights_only_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"image_decoder.fc.0.weight": Payload()}, path)
    decoder, learner = modules(0)
    with pytest.raises(pickle.UnpicklingError):
        load_anomalygpt_delta(path, decoder=decoder, prompt_learner=learner)


def test_pandagpt_delta_loads_into_peft_in_both_spellings_and_anomalygpt_overrides(tmp_path):
    peft_model, _ = tiny_peft_llama()
    params = dict(peft_model.named_parameters())
    for default in (False, True):
        state = pandagpt_state(peft_model, default=default, seed=int(default))
        path = tmp_path / f"panda{int(default)}.pt"
        torch.save(state, path)
        proj = nn.Linear(IMAGE_EMBED, HIDDEN)
        result = load_pandagpt_delta(path, llama_proj=proj, lora_target=peft_model)
        assert len(result.applied) == 2 + LAYERS * 4 * 2
        torch.testing.assert_close(proj.weight.detach(), state["llama_proj.weight"])
        for key, value in state.items():
            if is_lora_key(key):
                torch.testing.assert_close(params[lora_key_map(key)].detach(), value.float())

    # Without a target the LoRA tensors come back under peft's names.
    spare = load_pandagpt_delta(state, llama_proj=proj).lora
    assert set(spare) == {n for n in params if ".lora_" in n}

    # A user-trained AnomalyGPT delta holding llama_proj and LoRA overrides PandaGPT's.
    decoder, learner = modules(0)
    user = delta_state(*modules(2)) | pandagpt_state(peft_model, default=False, seed=7)
    load_anomalygpt_delta(user, decoder=decoder, prompt_learner=learner, llama_proj=proj,
                          lora_target=peft_model)
    torch.testing.assert_close(proj.bias.detach(), user["llama_proj.bias"])
    key = OFFICIAL.format(i=1, p="o", x="A", d="")
    torch.testing.assert_close(params[lora_key_map(key)].detach(), user[key].float())
    # ... and hands llama_proj back when no module is given.
    returned = load_anomalygpt_delta(user, decoder=decoder, prompt_learner=learner)
    assert set(returned.llama_proj) == {"weight", "bias"}
    assert len(returned.lora) == LAYERS * 8

    # Missing, extra-layer and mis-shaped LoRA tensors are named.
    bad = pandagpt_state(peft_model, default=True)
    missing = bad.pop(OFFICIAL.format(i=0, p="v", x="B", d=".default"))
    bad[OFFICIAL.format(i=5, p="q", x="A", d="")] = torch.zeros(RANK, HIDDEN)
    bad[OFFICIAL.format(i=1, p="q", x="A", d=".default")] = torch.zeros(RANK + 1, HIDDEN)
    with pytest.raises(ValueError, match="missing llama_model.base_model.model.model.layers.0"
                       r"\.self_attn\.v_proj\.lora_B\.weight") as err:
        load_pandagpt_delta(bad, llama_proj=proj, lora_target=peft_model)
    assert "unexpected llama_model.base_model.model.model.layers.5" in str(err.value)
    assert ("mis-shaped llama_model.base_model.model.model.layers.1.self_attn.q_proj"
            ".lora_A.default.weight: (5, 16), expected (4, 16)") in str(err.value)
    assert missing is not None
