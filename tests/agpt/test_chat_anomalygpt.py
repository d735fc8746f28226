"""`agpt chat --profile anomalygpt-7b`: the LLM answers follow-ups with the image spliced in."""

import argparse

import pytest

from agpt.model_commands import run_chat
from agpt.settings import Settings
from inference.model.anomalygpt.conversation import Conversation, query_text
from inference.model.testing import offline_tokenizer
from tests.inference.model.anomalygpt.official_tiny import (
    build_tiny_detector,
    part_image,
    use_tiny_official,
    write_tiny_official,
)

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning"),  # peft
]


def test_two_turn_dialogue_with_the_llm(tmp_path, monkeypatch, capsys):
    files = write_tiny_official(tmp_path / "official", offline_tokenizer())
    use_tiny_official(monkeypatch, files)
    refs = tmp_path / "refs"
    refs.mkdir()
    for i in range(3):
        part_image(i).save(refs / f"{i}.png")
    part_image(30, defect=True).save(tmp_path / "frame.png")
    args = argparse.Namespace(image=str(tmp_path / "frame.png"), product="metal_nut",
                              refs=str(refs), ask=["", "Where is it?"])
    assert run_chat(Settings(), args) == 0
    answers = [line.removeprefix("agpt> ") for line in capsys.readouterr().out.splitlines()
               if line.startswith("agpt> ")]
    assert len(answers) == 2

    # The same dialogue straight from the detector built on the same files.
    detector = build_tiny_detector(files)
    detector.set_references("metal_nut", [part_image(i) for i in range(3)])
    frame = part_image(30, defect=True)
    (detection,) = detector.detect("metal_nut", [frame])
    conversation = Conversation.start(query_text("metal nut"))
    conversation.add_answer(detection.text)
    conversation.ask("Where is it?")
    follow_up = detector.chat("metal_nut", frame, conversation)
    assert answers == [detection.text, follow_up]
