r"""AnomalyGPT / PandaGPT dialogue text: the prompt around the image and its history.

The language model sees (reference `code/model/openllama.py`, `prepare_generation_embedding`;
history as in `code/web_demo.py`, `predict`)::

    BOS "### Human: <Img>" [image token] "</Img> " [18 prompt tokens]
        "{q1}\n### Assistant: {a1}\n### Human: {q2}\n### Assistant:"

Only text lives here; `llm.AnomalyLLM` tokenizes the three pieces and splices the embeddings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

IMAGE_START = "### Human: <Img>"  # before the image token (reference PROMPT_START)
IMAGE_END = "</Img> "  # between the image token and the prompt tokens (reference p_middle)
ASSISTANT = "\n### Assistant:"  # closes a human turn; the answer follows after one space
TURN_END = "\n###"  # closes an assistant turn
HUMAN = " Human: "  # opens a later human turn, right after TURN_END
SEPARATOR = "###"  # generation stops here

_QUERY_TAIL = (
    "without any damage, flaw, defect, scratch, hole or broken part. "
    "Is there any anomaly in the image?"
)


def query_text(class_name: str, expected: str | None = None) -> str:
    """The inspection question for one product class (spec section 7).

    Args:
        class_name: What is photographed, e.g. "a bottle" or "carpet".
        expected: Its normal appearance, e.g. "round"; None or "" to leave it out.

    Returns:
        "This is a photo of {class}, which should be {expected} and without any damage, flaw,
        defect, scratch, hole or broken part. Is there any anomaly in the image?"
    """
    if expected:
        return f"This is a photo of {class_name}, which should be {expected} and {_QUERY_TAIL}"
    return f"This is a photo of {class_name}, which should be {_QUERY_TAIL}"


@dataclass
class Turn:
    """One human question and, once given, the assistant's answer."""

    question: str
    answer: str | None = None


@dataclass
class Conversation:
    """A dialogue about one image; the first question follows the image and prompt tokens."""

    turns: list[Turn] = field(default_factory=list)

    @classmethod
    def start(cls, question: str) -> Conversation:
        """A conversation whose first human turn asks `question`."""
        return cls([Turn(question)])

    @property
    def awaiting_answer(self) -> bool:
        """True when the last turn has a question and no answer yet."""
        return bool(self.turns) and self.turns[-1].answer is None

    def ask(self, question: str) -> None:
        """Appends a human turn.

        Raises:
            ValueError: the previous question has not been answered.
        """
        if self.awaiting_answer:
            msg = "the previous question has no answer yet"
            raise ValueError(msg)
        self.turns.append(Turn(question))

    def add_answer(self, answer: str) -> None:
        """Records the assistant's answer to the pending question (surrounding space dropped).

        Raises:
            ValueError: no question is pending.
        """
        if not self.awaiting_answer:
            msg = "no question is waiting for an answer"
            raise ValueError(msg)
        self.turns[-1].answer = answer.strip()

    def text_after_prompts(self) -> str:
        """Everything after the prompt tokens: questions, answers and the final "Assistant:".

        Raises:
            ValueError: the conversation is empty.
        """
        if not self.turns:
            msg = "the conversation has no question"
            raise ValueError(msg)
        parts: list[str] = []
        for index, turn in enumerate(self.turns):
            parts.append(turn.question if index == 0 else HUMAN + turn.question)
            parts.append(ASSISTANT)
            if turn.answer is not None:
                parts.append(f" {turn.answer}{TURN_END}")
        return "".join(parts)

    def render(self, image: str = "<Image>", prompts: str = "<Prompts>") -> str:
        """The whole prompt as text, with placeholders for the spliced embeddings (for logs)."""
        return IMAGE_START + image + IMAGE_END + prompts + self.text_after_prompts()


@dataclass(frozen=True)
class ParsedAnswer:
    """What an answer sentence says: the verdict (None when unclear) and grid positions."""

    anomalous: bool | None
    positions: list[str]


# Phrase -> one of our 3×3 grid words. The reference (datasets/mvtec.py, visa.py) uses exactly
# the nine grid words; the variants catch a paraphrasing or differently trained model.
_POSITION_WORDS: dict[str, str] = {
    "top left": "top left",
    "upper left": "top left",
    "top right": "top right",
    "upper right": "top right",
    "bottom left": "bottom left",
    "lower left": "bottom left",
    "bottom right": "bottom right",
    "lower right": "bottom right",
    "top center": "top",
    "top centre": "top",
    "top middle": "top",
    "upper middle": "top",
    "bottom center": "bottom",
    "bottom centre": "bottom",
    "bottom middle": "bottom",
    "lower middle": "bottom",
    "center left": "left",
    "centre left": "left",
    "middle left": "left",
    "center right": "right",
    "centre right": "right",
    "middle right": "right",
    "top": "top",
    "upper": "top",
    "bottom": "bottom",
    "lower": "bottom",
    "left": "left",
    "right": "right",
    "center": "center",
    "centre": "center",
    "middle": "center",
}
# The bilingual training set (all_supervised_with_cn.py, Chinese_position) answers in Chinese too.
_POSITION_WORDS_CN: dict[str, str] = {
    "左上方": "top left",
    "右上方": "top right",
    "左下方": "bottom left",
    "右下方": "bottom right",
    "上方": "top",
    "下方": "bottom",
    "左侧": "left",
    "右侧": "right",
    "中间": "center",
}


def _longest_first(phrases: Iterable[str]) -> list[str]:
    return sorted(phrases, key=len, reverse=True)


# Longest phrase first, so "top left" wins over "top"; "top-left" matches "top left".
_POSITION_RE = re.compile(
    r"\b(?P<en>"
    + "|".join(r"[\s-]+".join(map(re.escape, p.split())) for p in _longest_first(_POSITION_WORDS))
    + r")\b|(?P<cn>"
    + "|".join(map(re.escape, _longest_first(_POSITION_WORDS_CN)))
    + ")",
    re.IGNORECASE,
)
_VERDICT_RE = re.compile(r"^\W*(?:(?P<yes>yes\b|是)|(?P<no>no\b|不))", re.IGNORECASE)


def parse_answer(text: str) -> ParsedAnswer:
    """Reads the verdict and the grid positions from an answer sentence.

    Args:
        text: e.g. "Yes, there are 2 anomalies in the image, they are at the top and right of
            the image."

    Returns:
        `anomalous` True/False when the answer starts with "Yes"/"No" (or "是"/"不"), else None;
        `positions` the grid words in order of first mention, without repeats.
    """
    verdict = _VERDICT_RE.match(text)
    anomalous = None if verdict is None else verdict.group("yes") is not None
    positions: list[str] = []
    for match in _POSITION_RE.finditer(text):
        if match.group("cn") is not None:
            word = _POSITION_WORDS_CN[match.group("cn")]
        else:
            word = _POSITION_WORDS[" ".join(re.split(r"[\s-]+", match.group("en").lower()))]
        if word not in positions:
            positions.append(word)
    return ParsedAnswer(anomalous=anomalous, positions=positions)
