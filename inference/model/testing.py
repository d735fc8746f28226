"""Random-weight AnomalyGPT builds and an offline tokenizer, for tests and benchmarks.

Nothing here loads a checkpoint: `build_random` allocates the architecture (`meta` →
`to_empty(device)`) and fills it in place, and `offline_tokenizer` trains a small byte-level
BPE on the dialogue format, so shape, format and speed checks run without downloads.
"""

from __future__ import annotations

import math

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PretrainedConfig, PreTrainedTokenizerFast

from .anomalygpt.conversation import query_text
from .anomalygpt.image_encoder import ImageEncoder
from .anomalygpt.model import AnomalyGPT, AnomalyGPTConfig

CLASSES = ("bottle", "metal_nut", "transistor", "carpet", "screw", "pill", "zipper", "cable")
_ANSWERS = (
    "No, there is no anomaly in the image.",
    "Yes, there is an anomaly in the image, at the top left of the image.",
    "Yes, there are 2 anomalies in the image, they are at the center and bottom right of "
    "the image.",
)


def offline_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the dialogue format, adding BOS like Vicuna's tokenizer.

    "###", " Yes" and " No" come out as tokens, so the verdict and stop ids exist.
    """
    questions = [query_text(name.replace("_", " ")) for name in CLASSES]
    corpus = [
        f"### Human: <Img></Img> {q}\n### Assistant: {a}\n###"
        for q in questions
        for a in _ANSWERS
    ] * 4
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer)
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="</s>",
    )


def vicuna_7b_config(vocab_size: int = 32001) -> LlamaConfig:
    """LLaMA-7B / Vicuna-7B v0 shapes (hidden 4096, 32 layers and heads, MLP 11008)."""
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048,
        rms_norm_eps=1e-6, tie_word_embeddings=False,
    )


def tiny_llama_config(vocab_size: int = 400) -> LlamaConfig:
    """A two-layer LLaMA of hidden 16 (= ``AnomalyGPTConfig.tiny().llm_hidden``)."""
    return LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                       max_position_embeddings=512)


def tiny_composition(encoder: ImageEncoder, config: AnomalyGPTConfig, *,
                     seed: int = 0) -> AnomalyGPT:
    """AnomalyGPT composed around ``encoder`` with a random two-layer LLaMA of hidden 16.

    For format and training checks on a real encoder (e.g. DINOv2-S taps) without loading a
    real LLM; ``config.llm_hidden`` must be 16.
    """
    tokenizer = offline_tokenizer()
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256))
    return AnomalyGPT.compose(encoder=encoder, lm=lm, tokenizer=tokenizer, config=config)


@torch.no_grad()
def fill_random_(model: torch.nn.Module, *, std: float = 0.02, seed: int = 0) -> None:
    """Random weights in place: matrices N(0, std), biases 0, norm gains 1."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("log_logit_scale"):
            param.fill_(math.log(1 / 0.07))
        elif name.endswith("bias"):
            param.zero_()
        elif param.ndim == 1:  # LayerNorm / RMSNorm gains
            param.fill_(1.0)
        else:
            param.normal_(0.0, std, generator=generator)


def build_random(
    config: AnomalyGPTConfig,
    lm_config: PretrainedConfig,
    tokenizer: PreTrainedTokenizerFast,
    *,
    device: str | torch.device,
    dtype: torch.dtype,
    std: float = 0.02,
    seed: int = 0,
) -> AnomalyGPT:
    """`AnomalyGPT.empty` (meta → `to_empty(device)`) filled by `fill_random_`."""
    model = AnomalyGPT.empty(config, lm_config, tokenizer, device=device, dtype=dtype)
    fill_random_(model, std=std, seed=seed)
    return model


def random_pixels(
    batch: int, *, size: int = 224, seed: int = 0, device: str = "cpu"
) -> torch.Tensor:
    """[B, 3, size, size] standard-normal "normalised" images."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator).to(device)
