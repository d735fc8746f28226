"""Dialogue text in the AnomalyGPT/PandaGPT format, the query, and answer parsing."""

from __future__ import annotations

import pytest

from inference.model.anomalygpt.conversation import (
    Conversation,
    ParsedAnswer,
    parse_answer,
    query_text,
)
from inference.model.positions import GRID_WORDS, answer_text

BOTTLE = (
    "This is a photo of a bottle, which should be round and without any damage, flaw, defect, "
    "scratch, hole or broken part. Is there any anomaly in the image?"
)


def reference_prompt_text(history: list[tuple[str, str]], question: str) -> str:
    """The prompt as the reference builds it (code/web_demo.py `predict` + openllama.py)."""
    prompt_text = ""
    for idx, (q, a) in enumerate(history):
        if idx == 0:
            prompt_text += f"{q}\n### Assistant: {a}\n###"
        else:
            prompt_text += f" Human: {q}\n### Assistant: {a}\n###"
    if len(history) == 0:
        prompt_text += f"{question}"
    else:
        prompt_text += f" Human: {question}"
    return prompt_text + "\n### Assistant:"  # prepare_generation_embedding


def test_query_text_with_and_without_expected_appearance() -> None:
    assert query_text("a bottle", "round") == BOTTLE
    assert query_text("carpet") == (
        "This is a photo of carpet, which should be without any damage, flaw, defect, "
        "scratch, hole or broken part. Is there any anomaly in the image?"
    )


def test_one_turn_prompt() -> None:
    conversation = Conversation.start(BOTTLE)
    assert conversation.awaiting_answer
    assert conversation.render() == (
        f"### Human: <Img><Image></Img> <Prompts>{BOTTLE}\n### Assistant:"
    )
    assert conversation.text_after_prompts() == reference_prompt_text([], BOTTLE)


def test_two_turn_prompt() -> None:
    conversation = Conversation.start(BOTTLE)
    conversation.add_answer(" Yes, there is an anomaly in the image, at the top of the image.\n")
    conversation.ask("What kind of defect is it?")
    assert conversation.render("[I]", "[P]") == (
        f"### Human: <Img>[I]</Img> [P]{BOTTLE}\n### Assistant: Yes, there is an anomaly in "
        "the image, at the top of the image.\n### Human: What kind of defect is it?\n"
        "### Assistant:"
    )


def test_three_turns_match_the_reference_history_format() -> None:
    history = [(BOTTLE, "No, there is no anomaly in the image."), ("Sure?", "Yes.")]
    conversation = Conversation.start(history[0][0])
    for index, (question, answer) in enumerate(history):
        if index:
            conversation.ask(question)
        conversation.add_answer(answer)
    conversation.ask("Thanks.")
    assert conversation.text_after_prompts() == reference_prompt_text(history, "Thanks.")


def test_turn_order_is_enforced() -> None:
    conversation = Conversation.start("Q")
    with pytest.raises(ValueError, match="no answer yet"):
        conversation.ask("Q2")
    conversation.add_answer("A")
    with pytest.raises(ValueError, match="no question"):
        conversation.add_answer("A again")
    with pytest.raises(ValueError, match="no question"):
        Conversation().text_after_prompts()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No, there is no anomaly in the image.", ParsedAnswer(False, [])),
        (
            "Yes, there is an anomaly in the image, at the top left of the image.",
            ParsedAnswer(True, ["top left"]),
        ),
        (
            "Yes, there are 2 anomalies in the image, they are at the top and right of the image.",
            ParsedAnswer(True, ["top", "right"]),
        ),
        (
            "Yes, there are 3 anomalies in the image, they are at the bottom right, center and "
            "top of the image.",
            ParsedAnswer(True, ["bottom right", "center", "top"]),
        ),
        ("Yes, there is a defect in the image.", ParsedAnswer(True, [])),
        ("No, this is a photo of bottle without any defects.", ParsedAnswer(False, [])),
        ("yes — at the upper-left and the lower right", ParsedAnswer(True, ["top left",
                                                                          "bottom right"])),
        ("Yes, in the middle, near the top center.", ParsedAnswer(True, ["center", "top"])),
        ("是的，图中有1个异常， 在图像的左上方和右侧。", ParsedAnswer(True, ["top left", "right"])),
        ("不，图像中没有任何异常。", ParsedAnswer(False, [])),
        ("I cannot tell.", ParsedAnswer(None, [])),
        ("Nope", ParsedAnswer(None, [])),
        ("", ParsedAnswer(None, [])),
    ],
)
def test_parse_answer(text: str, expected: ParsedAnswer) -> None:
    assert parse_answer(text) == expected


@pytest.mark.parametrize("word", [w for row in GRID_WORDS for w in row])
def test_every_grid_word_survives_the_answer_sentence(word: str) -> None:
    assert parse_answer(answer_text(True, [word])) == ParsedAnswer(True, [word])
