r"""The LLM's training inputs: the inference splice plus the answers, labelled for the loss.

Per row, as `llm.AnomalyLLM.build_inputs` builds it for inference, then each answer::

    [BOS] "### Human: <Img>" image "</Img> " prompts[18] q1 "\n### Assistant:" " a1\n###"
        " Human: " q2 "\n### Assistant:" " a2\n###" ...

Every piece is tokenized on its own, as at inference (where the prompt ends at "Assistant:" and
the answer is generated after it), and only the answer pieces (" a\n###", so the model also
learns to stop) carry labels. Rows are left-padded like the inference batch, so every row's
last answer ends at the last position and `logits_to_keep` can skip the LM head elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from inference.model.anomalygpt.conversation import ASSISTANT, HUMAN, TURN_END
from inference.model.anomalygpt.llm import AnomalyLLM

from .losses import IGNORE

__all__ = ["TrainingInputs", "build_training_inputs"]


class TrainingInputs(NamedTuple):
    """Left-padded inputs with labels."""

    inputs_embeds: Tensor  # [B, T, H]
    attention_mask: Tensor  # [B, T]
    labels: Tensor  # [B, T] token ids at answer positions, IGNORE elsewhere
    keep: int  # the last `keep` positions hold every labelled token and its predecessor


def build_training_inputs(llm: AnomalyLLM, dialogues: Sequence[Sequence[tuple[str, str]]],
                          image_embeds: Tensor, prompt_embeds: Tensor) -> TrainingInputs:
    """Embeddings and labels of answered dialogues about one image each.

    Args:
        llm: The model's LLM (tokenizer, embeddings, `llama_proj`).
        dialogues: Per row, (question, answer) turns; the first question follows the prompts.
        image_embeds: [B, image_embed_dim] global image embeddings (before `llama_proj`).
        prompt_embeds: [B, P, H] prompt-learner outputs.

    Returns:
        `TrainingInputs`; gradients flow into `llama_proj`, the prompts and the LM.
    """
    batch = len(dialogues)
    tokenizer = llm.tokenizer
    before_ids, middle_ids = llm.image_prefix_ids()
    table = llm.llama_model.get_input_embeddings()
    dtype = table.weight.dtype
    device = llm.device
    image_tokens = llm.llama_proj(image_embeds.to(device, llm.llama_proj.weight.dtype))

    def embed(ids: list[int]) -> Tensor:
        return table(torch.tensor(ids, dtype=torch.long, device=device))

    rows: list[Tensor] = []
    row_labels: list[list[int]] = []
    for i, turns in enumerate(dialogues):
        head = embed(before_ids), image_tokens[i : i + 1].to(dtype), embed(middle_ids)
        prompts = prompt_embeds[i].to(device, dtype)
        labels = [IGNORE] * (len(before_ids) + 1 + len(middle_ids) + prompts.shape[0])
        text_ids: list[int] = []
        for index, (question, answer) in enumerate(turns):
            asked = tokenizer((question if index == 0 else HUMAN + question) + ASSISTANT,
                              add_special_tokens=False).input_ids
            answered = tokenizer(f" {answer.strip()}{TURN_END}",
                                 add_special_tokens=False).input_ids
            text_ids += asked + answered
            labels += [IGNORE] * len(asked) + answered
        rows.append(torch.cat([*head, prompts, embed(text_ids)]))
        row_labels.append(labels)
    length = max(row.shape[0] for row in rows)
    hidden = rows[0].shape[1]
    inputs_embeds = torch.zeros(batch, length, hidden, dtype=dtype, device=device)
    attention_mask = torch.zeros(batch, length, dtype=torch.long, device=device)
    labels_tensor = torch.full((batch, length), IGNORE, dtype=torch.long, device=device)
    for i, (row, labels) in enumerate(zip(rows, row_labels, strict=True)):
        start = length - row.shape[0]
        inputs_embeds[i, start:] = row
        attention_mask[i, start:] = 1
        labels_tensor[i, start:] = torch.tensor(labels, dtype=torch.long, device=device)
    labelled = (labels_tensor != IGNORE).any(dim=0).nonzero()
    keep = length - int(labelled.min()) + 1 if len(labelled) else 1
    return TrainingInputs(inputs_embeds, attention_mask, labels_tensor, keep)
