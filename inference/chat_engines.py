"""The assistant's chat engines: one per profile family, answering about a stored verdict."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy.orm import Session, sessionmaker
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from inference.assistant import ChatSubject
from inference.chat import AnomalyGPTChat, GroundedChat, resume_conversation
from inference.model.anomalygpt.anomalygpt_detector import AnomalyGPTDetector
from inference.model.anomalygpt.conversation import query_text
from inference.pool import load_product


class GroundedEngine:
    """The CPU profiles: the stored verdict and evidence ground a small instruction LM."""

    def __init__(self, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *,
                 model_id: str, max_new_tokens: int = 96) -> None:
        """Answer with ``lm`` (e.g. SmolLM2-135M-Instruct), at most ``max_new_tokens``."""
        self.lm = lm
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.max_new_tokens = max_new_tokens

    def stream(self, subject: ChatSubject, turns: Sequence[tuple[str, str]],
               question: str) -> Iterator[str]:
        """Yield the answer to ``question`` after the earlier turns, as generated."""
        chat = GroundedChat(self.lm, self.tokenizer, product=subject.product,
                            detection=subject.detection, max_new_tokens=self.max_new_tokens)
        chat.conversation = resume_conversation(query_text(subject.product),
                                                subject.detection, turns)
        yield from chat.stream(question)


class AnomalyGPTEngine:
    """``anomalygpt-7b``: the frame and the product pool's few-shot map go into the LLM."""

    def __init__(self, detector: AnomalyGPTDetector, *,
                 session_factory: sessionmaker[Session], max_new_tokens: int = 256) -> None:
        """Answer with ``detector``'s LLM; pools are (re)loaded from ``session_factory``."""
        self.detector = detector
        self.session_factory = session_factory
        self.model_id = detector.config.model_id
        self.max_new_tokens = max_new_tokens

    def stream(self, subject: ChatSubject, turns: Sequence[tuple[str, str]],
               question: str) -> Iterator[str]:
        """Yield the answer to ``question`` about the frame, as generated."""
        if subject.image is None:
            yield ("This frame's image is not stored, so I cannot look at it again; the "
                   f"inspection said: {subject.detection.text}")
            return
        memory = self.detector.product(subject.product)
        if memory is None or memory.version < subject.pool_version:
            load_product(detector=self.detector, session_factory=self.session_factory,
                         product=subject.product)
        if self.detector.product(subject.product) is None:
            yield f"The pool of {subject.product} is empty, so I have no normal reference."
            return
        chat = AnomalyGPTChat(self.detector, product=subject.product, image=subject.image,
                              detection=subject.detection, max_new_tokens=self.max_new_tokens)
        chat.conversation = resume_conversation(
            query_text(subject.product.replace("_", " ")), subject.detection, turns)
        yield from chat.stream(question)
