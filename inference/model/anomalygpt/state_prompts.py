"""AnomalyGPT's state prompts: the text side of the zero-shot anomaly map.

The lists and templates are those of CASIA-IVA-Lab/AnomalyGPT `code/model/openllama.py`
(`prompt_normal`, `prompt_abnormal`, `prompt_templates`, lines 17-21) and
`encode_text_with_prompt_ensemble` (lines 50-77): every state is formatted with the class name,
then put into every template (state-major order); each side is averaged and re-normalised.
The reference embeds with ImageBind's text postprocessor, which also multiplies by the logit
scale; a constant factor vanishes in the re-normalisation, so `encode_text`'s unit vectors give
the same features. Underscores in class names become spaces, as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from .clip_tokenizer import tokenize
from .imagebind import ImageBindEncoder

__all__ = [
    "ABNORMAL_STATES",
    "NORMAL_STATES",
    "TEMPLATES",
    "state_prompt_texts",
    "text_features",
]

NORMAL_STATES = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
ABNORMAL_STATES = (
    "damaged {}",
    "broken {}",
    "{} with flaw",
    "{} with defect",
    "{} with damage",
)
TEMPLATES = ("a photo of a {}.", "a photo of the {}.")


def _sentences(states: tuple[str, ...], class_name: str) -> list[str]:
    return [template.format(state.format(class_name)) for state in states for template in TEMPLATES]


def state_prompt_texts(class_name: str) -> tuple[list[str], list[str]]:
    """All prompt sentences for one class.

    Args:
        class_name: Product class, e.g. "metal_nut" (underscores become spaces).

    Returns:
        (normal, abnormal): 14 and 10 sentences, state-major ("a photo of a flawless x.",
        "a photo of the flawless x.", ...).
    """
    name = class_name.replace("_", " ")
    return _sentences(NORMAL_STATES, name), _sentences(ABNORMAL_STATES, name)


@torch.no_grad()
def text_features(encoder: ImageBindEncoder, class_name: str) -> Tensor:
    """State-prompt text features of a class, for `ImageDecoder.zero_shot_map`.

    Args:
        encoder: ImageBind text encoder (`encode_text(ids [B, 77]) -> [B, D]`, unit norm).
        class_name: Product class.

    Returns:
        [2, D] float32, rows (normal, abnormal), each the re-normalised mean of its sentences.
    """
    device = encoder.text.token_embedding.weight.device
    sides = []
    for sentences in state_prompt_texts(class_name):
        embeddings = encoder.encode_text(tokenize(sentences).to(device)).float()
        sides.append(F.normalize(embeddings.mean(dim=0), dim=-1))
    return torch.stack(sides)
