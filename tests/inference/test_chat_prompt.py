"""GroundedChat's prompt: the evidence as text, in the LM's own chat template."""

import numpy as np
import pytest

from inference.chat import GroundedChat, evidence_text
from inference.model.interface import Detection

pytestmark = pytest.mark.slow


def _detection(*, anomalous: bool, positions: list[str]) -> Detection:
    size = 8
    return Detection(score=1.7 if anomalous else 0.4, anomalous=anomalous, threshold=1.0,
                     anomaly_map=np.zeros((size, size), np.float32),
                     mask=np.zeros((size, size), bool), positions=positions,
                     text="Yes, there is an anomaly in the image." if anomalous
                     else "No, there is no anomaly in the image.")


def test_evidence_names_regions_or_the_whole_part():
    assert "top left, center" in evidence_text("nut", _detection(anomalous=True,
                                                                 positions=["top left", "center"]))
    whole = evidence_text("nut", _detection(anomalous=True, positions=[]))
    assert "whole part" in whole
    assert "anomalous" in whole
    normal = evidence_text("nut", _detection(anomalous=False, positions=[]))
    assert "normal" in normal
    assert "whole part" not in normal


def test_follow_up_prompt_uses_the_chat_template_with_the_evidence(smollm2):
    lm, tokenizer = smollm2
    chat = GroundedChat(lm, tokenizer, product="textile",
                        detection=_detection(anomalous=True, positions=["top right"]),
                        max_new_tokens=4)
    first = chat.ask()
    assert first.text == "Yes, there is an anomaly in the image."
    chat.conversation.ask("Where is it?")
    prompt = chat.prompt()
    assert prompt.startswith("<|im_start|>system\n")
    assert "inspection of textile: anomalous" in prompt
    assert "top right" in prompt
    # The first turn is in the history as a user/assistant pair, the new question pending.
    assert "<|im_start|>assistant\nYes, there is an anomaly in the image.<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>user\nWhere is it?<|im_end|>\n<|im_start|>assistant\n")
    assert "###" not in prompt
