r"""The language model of AnomalyGPT: image and prompt embeddings spliced into the dialogue.

Input embeddings per row (reference `code/model/openllama.py`, `prompt_wrap` and
`prepare_generation_embedding`)::

    [BOS] emb("### Human: <Img>") llama_proj(image) emb("</Img> ") prompts[18] emb(after)

where `after` is `Conversation.text_after_prompts()`, ending in "\n### Assistant:". Rows are
left-padded so that the last position of every row is the answer position: one batched
forward pass gives every frame's verdict from the first answer token's logits. Works with any
Hugging Face causal LM (Vicuna-7B in the faithful profile, SmolLM2-135M on CPU).

Attribute names follow the reference, so PandaGPT/AnomalyGPT state-dict keys apply as they
are: `llama_proj.*` and `llama_model.base_model.model.model.layers.{i}.self_attn.q_proj.
lora_A.default.weight` (with LoRA).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor, nn
from transformers import (
    GenerationMixin,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from .conversation import ASSISTANT, IMAGE_END, IMAGE_START, SEPARATOR, Conversation


class LoraTargetError(ValueError):
    """A LoRA target pattern matches no module of the language model."""


@dataclass(frozen=True)
class LoraSettings:
    """LoRA on the attention projections (PandaGPT: r 32, alpha 32, dropout 0.1, q/k/v/o)."""

    r: int = 32
    alpha: int = 32
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    @classmethod
    def pandagpt(cls) -> LoraSettings:
        """The settings of the released PandaGPT / AnomalyGPT LoRA weights."""
        return cls()


class LLMInputs(NamedTuple):
    """Spliced, left-padded inputs for the language model."""

    inputs_embeds: Tensor  # [B, T, H]
    attention_mask: Tensor  # [B, T] long, 0 on the left padding


class VerdictLogits(NamedTuple):
    """The answer's first token read as a yes/no verdict, one entry per row."""

    log_odds: Tensor  # [B] logsumexp(yes tokens) - logsumexp(no tokens)
    probability: Tensor  # [B] P(yes | the answer starts with yes or no)
    anomalous: Tensor  # [B] bool, probability > 0.5


def position_ids_for(attention_mask: Tensor) -> Tensor:
    """Positions counted from each row's first real token (left padding gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def answer_token_ids(tokenizer: PreTrainedTokenizerBase, word: str) -> list[int]:
    r"""Token ids that can start the answer `word` right after "\n### Assistant:".

    Tokenizes the whole line with and without the space before the answer (the reference
    writes "### Assistant: {answer}"; SentencePiece adds its own word boundary), and keeps
    the token that follows the tokens of "\n### Assistant:".
    """
    prefix = tokenizer(ASSISTANT, add_special_tokens=False).input_ids
    ids: set[int] = set()
    for joiner in (" ", ""):
        full = tokenizer(ASSISTANT + joiner + word, add_special_tokens=False).input_ids
        if full[: len(prefix)] == prefix and len(full) > len(prefix):
            ids.add(full[len(prefix)])
    return sorted(ids)


def separator_token_ids(
    tokenizer: PreTrainedTokenizerBase, separator: str = SEPARATOR
) -> list[int]:
    """Ids of the tokens whose text (leading space dropped) starts with `separator`.

    For the Vicuna-7B tokenizer this includes 2277 ("###"), the reference's only stop id.
    """
    candidates = [i for token, i in tokenizer.get_vocab().items() if separator[0] in token]
    return sorted(
        i for i in candidates if str(tokenizer.decode([i])).lstrip().startswith(separator)
    )


class StopAtTokens(StoppingCriteria):
    """Stops each row once its newest token is one of `stop_ids`."""

    def __init__(self, stop_ids: Sequence[int]) -> None:
        self.stop_ids = torch.tensor(sorted(set(stop_ids)), dtype=torch.long)

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs: Any) -> Tensor:  # noqa: D102
        return torch.isin(input_ids[:, -1], self.stop_ids.to(input_ids.device))


def _embedding_table(lm: nn.Module) -> nn.Embedding:
    return cast("nn.Embedding", cast("PreTrainedModel", lm).get_input_embeddings())


def _wrap_lora(lm: PreTrainedModel, settings: LoraSettings) -> nn.Module:
    names = [name for name, _ in lm.named_modules()]
    unmatched = [
        target
        for target in settings.target_modules
        if not any(name == target or name.endswith(f".{target}") for name in names)
    ]
    if unmatched:
        msg = f"LoRA targets {unmatched} match no module of {type(lm).__name__}"
        raise LoraTargetError(msg)
    from peft import LoraConfig, TaskType, get_peft_model  # only profiles with LoRA need peft

    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
    )
    return get_peft_model(lm, config)


class AnomalyLLM(nn.Module):
    """Causal LM + `llama_proj`, answering questions about one image per conversation.

    Args:
        lm: Any Hugging Face causal LM; frozen when LoRA wraps it.
        tokenizer: Its tokenizer.
        image_embed_dim: Width of the global image embedding (1024 for ImageBind-Huge,
            384 for the DINOv2-S CPU profile); `llama_proj` maps it to the LM's hidden size.
        lora: LoRA settings, or None to use the LM as it is.
        add_bos: Prepend the BOS token; None follows the tokenizer (Vicuna's adds one,
            SmolLM2's does not).
    """

    def __init__(
        self,
        lm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        image_embed_dim: int,
        lora: LoraSettings | None = None,
        add_bos: bool | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        table = _embedding_table(lm)
        self.hidden_size = int(table.embedding_dim)
        self.image_embed_dim = image_embed_dim
        # A PeftModel forwards the PreTrainedModel API (forward, generate, embeddings).
        self.llama_model = cast(
            "PreTrainedModel", lm if lora is None else _wrap_lora(lm, lora)
        )
        self.llama_proj = nn.Linear(image_embed_dim, self.hidden_size).to(table.weight.device)

        bos = tokenizer.bos_token_id
        if add_bos is None:
            probe = tokenizer("a").input_ids
            add_bos = bos is not None and len(probe) > 0 and probe[0] == bos
        if add_bos and bos is None:
            msg = "add_bos=True but the tokenizer has no BOS token"
            raise ValueError(msg)
        self._bos_ids: list[int] = [int(bos)] if add_bos else []
        self._before_ids = tokenizer(IMAGE_START, add_special_tokens=False).input_ids
        self._middle_ids = tokenizer(IMAGE_END, add_special_tokens=False).input_ids

        self.yes_ids = answer_token_ids(tokenizer, "Yes")
        self.no_ids = answer_token_ids(tokenizer, "No")
        shared = set(self.yes_ids) & set(self.no_ids)
        self.yes_ids = [i for i in self.yes_ids if i not in shared]
        self.no_ids = [i for i in self.no_ids if i not in shared]
        if not self.yes_ids or not self.no_ids:
            msg = "cannot find distinct first tokens for 'Yes' and 'No' after '### Assistant:'"
            raise ValueError(msg)
        self.separator_ids = separator_token_ids(tokenizer)
        self.eval()

    def image_prefix_ids(self) -> tuple[list[int], list[int]]:
        """Token ids around the image token: (BOS + "### Human: <Img>", "</Img> ")."""
        return self._bos_ids + self._before_ids, list(self._middle_ids)

    @property
    def device(self) -> torch.device:
        """Where the LM's input embeddings live."""
        return _embedding_table(self.llama_model).weight.device

    def build_inputs(
        self,
        conversations: Sequence[Conversation],
        image_embeds: Tensor,
        prompt_embeds: Tensor,
    ) -> LLMInputs:
        """Splices each row's image token and prompt tokens into its dialogue text.

        Args:
            conversations: One per row; the first question follows the prompt tokens.
            image_embeds: [B, image_embed_dim] global image embeddings (before llama_proj).
            prompt_embeds: [B, P, H] prompt-learner tokens (P = 18 in AnomalyGPT).

        Returns:
            inputs_embeds [B, T, H] and attention_mask [B, T], left-padded with zeros.
        """
        batch = len(conversations)
        if image_embeds.shape != (batch, self.image_embed_dim):
            msg = f"image_embeds {tuple(image_embeds.shape)} != ({batch}, {self.image_embed_dim})"
            raise ValueError(msg)
        if prompt_embeds.dim() != 3 or prompt_embeds.shape[0] != batch or (
            prompt_embeds.shape[2] != self.hidden_size
        ):
            msg = f"prompt_embeds {tuple(prompt_embeds.shape)} != ({batch}, P, {self.hidden_size})"
            raise ValueError(msg)
        table = _embedding_table(self.llama_model)
        image_tokens = self.llama_proj(image_embeds.to(self.device, self.llama_proj.weight.dtype))
        # One tokenisation per distinct text and one embedding lookup for the whole batch;
        # the image and prompt tokens are then written into their slots (no per-row kernels).
        after_of: dict[str, list[int]] = {}
        for conversation in conversations:
            text = conversation.text_after_prompts()
            if text not in after_of:
                after_of[text] = self.tokenizer(text, add_special_tokens=False).input_ids
        after = [after_of[c.text_after_prompts()] for c in conversations]
        before = self._bos_ids + self._before_ids
        prompts = prompt_embeds.shape[1]
        head = len(before) + 1 + len(self._middle_ids) + prompts
        lengths = [head + len(ids) for ids in after]
        length = max(lengths)
        pad = 0
        ids = torch.full((batch, length), pad, dtype=torch.long)
        attention_mask = torch.zeros(batch, length, dtype=torch.long)
        for i, row_after in enumerate(after):
            start = length - lengths[i]
            row = [*before, pad, *self._middle_ids, *([pad] * prompts), *row_after]
            ids[i, start:] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, start:] = 1
        ids, attention_mask = ids.to(self.device), attention_mask.to(self.device)
        inputs_embeds = table(ids) * attention_mask.unsqueeze(-1).to(table.weight.dtype)
        starts = torch.tensor([length - n for n in lengths], device=self.device)
        rows = torch.arange(batch, device=self.device)
        image_at = starts + len(before)
        inputs_embeds[rows, image_at] = image_tokens.to(table.weight.dtype)
        prompt_at = (image_at + 1 + len(self._middle_ids)).unsqueeze(1) + torch.arange(
            prompts, device=self.device
        )
        inputs_embeds[rows.unsqueeze(1), prompt_at] = prompt_embeds.to(
            self.device, table.weight.dtype
        )
        return LLMInputs(inputs_embeds, attention_mask)

    @staticmethod
    def _check_pending(conversations: Sequence[Conversation]) -> None:
        if not conversations or not all(c.awaiting_answer for c in conversations):
            msg = "every conversation must end with a question waiting for its answer"
            raise ValueError(msg)

    @torch.no_grad()
    def verdict_logits(
        self,
        conversations: Sequence[Conversation],
        image_embeds: Tensor,
        prompt_embeds: Tensor,
    ) -> VerdictLogits:
        """Yes/no verdicts of a batch from one prefill, without generating text.

        Compares the logits of the tokens that start " Yes"/"Yes" and " No"/"No" at the answer
        position (the last, thanks to left padding).

        Args:
            conversations: One per row, each ending with an unanswered question.
            image_embeds: [B, image_embed_dim].
            prompt_embeds: [B, P, H].

        Returns:
            log-odds, P(yes) and the verdict (P(yes) > 0.5) per row.
        """
        self._check_pending(conversations)
        inputs = self.build_inputs(conversations, image_embeds, prompt_embeds)
        # The decoder's last hidden state at the answer position, read by the head's yes/no
        # rows only (the full vocabulary's logits are never needed for a verdict).
        lm: Any = self.llama_model
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        hidden = base.get_decoder()(
            inputs_embeds=inputs.inputs_embeds,
            attention_mask=inputs.attention_mask,
            position_ids=position_ids_for(inputs.attention_mask),
            use_cache=False,
        ).last_hidden_state[:, -1]  # [B, H]
        head = cast("nn.Linear", base.get_output_embeddings())
        ids = torch.tensor(self.yes_ids + self.no_ids, device=hidden.device)
        bias = None if head.bias is None else head.bias[ids]
        logits = torch.nn.functional.linear(hidden, head.weight[ids], bias).float()
        yes = torch.logsumexp(logits[:, : len(self.yes_ids)], dim=-1)
        no = torch.logsumexp(logits[:, len(self.yes_ids) :], dim=-1)
        log_odds = yes - no
        probability = torch.sigmoid(log_odds)
        return VerdictLogits(log_odds, probability, probability > 0.5)

    @torch.no_grad()
    def generate(
        self,
        conversations: Sequence[Conversation],
        image_embeds: Tensor,
        prompt_embeds: Tensor,
        *,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        streamer: Any = None,
    ) -> list[str]:
        """Answers the pending question of each conversation.

        Generation stops per row at a token starting with "###" (the turn separator) or at
        EOS; the text is cut at "###" and stripped. The caller records the answer with
        `Conversation.add_answer` to continue the dialogue.

        Args:
            conversations: One per row, each ending with an unanswered question.
            image_embeds: [B, image_embed_dim].
            prompt_embeds: [B, P, H].
            max_new_tokens: Upper bound on generated tokens per row.
            do_sample: Sample (with `temperature`, `top_p`) instead of greedy decoding.
            temperature: Sampling temperature.
            top_p: Nucleus sampling mass.
            streamer: A transformers streamer that receives the new tokens as they are
                generated (batch of one only).

        Returns:
            One answer per row.
        """
        self._check_pending(conversations)
        inputs = self.build_inputs(conversations, image_embeds, prompt_embeds)
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p}
            if do_sample
            else {"do_sample": False}
        )
        generated = cast("GenerationMixin", self.llama_model).generate(
            inputs_embeds=inputs.inputs_embeds,
            attention_mask=inputs.attention_mask,
            max_new_tokens=max_new_tokens,
            stopping_criteria=StoppingCriteriaList([StopAtTokens(self.separator_ids)]),
            pad_token_id=pad,
            eos_token_id=eos,
            streamer=streamer,
            **sampling,
        )
        # With inputs_embeds only, decoder-only generate returns just the new tokens.
        stops = set(self.separator_ids) | ({eos} if eos is not None else set())
        texts = []
        for row in generated.tolist():
            end = next((k for k, token in enumerate(row) if token in stops), len(row))
            text = str(self.tokenizer.decode(row[:end], skip_special_tokens=True))
            texts.append(text.split(SEPARATOR, 1)[0].strip())
        return texts
