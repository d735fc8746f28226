"""CLIP byte-level BPE tokenizer with ImageBind's text conventions.

Produces the same ids as ImageBind's `SimpleTokenizer` (imagebind/models/
multimodal_preprocessors.py): `ftfy.fix_text`, HTML-unescape twice, collapse whitespace,
lowercase, split with CLIP's regex, byte-to-unicode map, BPE with the first 48,894 merges of
`bpe_simple_vocab_16e6`, then `<|startoftext|>` … `<|endoftext|>` zero-padded to 77. Over-long
texts are cut to 76 tokens and the end token is put at position 76, as current ImageBind does
(the copy vendored in AnomalyGPT cut without keeping it; the two differ only past 75 BPE tokens).

The vocabulary is vendored in `assets/` (OpenAI CLIP, MIT licence beside it); nothing is
downloaded. It is read on the first call, not at import.
"""

from __future__ import annotations

import gzip
import html
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path

import ftfy
import regex
import torch

VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
CONTEXT_LENGTH = 77
START_TOKEN = 49406  # <|startoftext|>
END_TOKEN = 49407  # <|endoftext|>
VOCAB_SIZE = 49408
# The merges file holds 262,144 lines; CLIP uses the 49152 - 256 - 2 first merges after the
# header, so that 256 bytes x 2 (plain and word-final) + merges + 2 specials = 49,408 ids.
_NUM_MERGES = VOCAB_SIZE - 2 * 256 - 2
_SPECIALS = ("<|startoftext|>", "<|endoftext|>")
_WORD_END = "</w>"
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_CACHE_LIMIT = 100_000


def default_vocab_path() -> Path:
    """Path of the vendored `bpe_simple_vocab_16e6.txt.gz`."""
    return Path(str(resources.files(__package__) / "assets" / VOCAB_NAME))


def _byte_to_unicode() -> dict[int, str]:
    """CLIP's reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the other 68 (controls, space, soft hyphen…)
    map to code points 256, 257, … in byte order, so BPE never sees whitespace or controls.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def clean_text(text: str) -> str:
    """Ftfy repair, double HTML unescape, whitespace collapse, lowercase (CLIP's cleaning)."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class ClipTokenizer:
    """Byte-level BPE over the CLIP vocabulary.

    Args:
        vocab_path: gzip merges file; defaults to the vendored `bpe_simple_vocab_16e6.txt.gz`.
    """

    def __init__(self, vocab_path: str | Path | None = None) -> None:
        path = Path(vocab_path) if vocab_path is not None else default_vocab_path()
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        merges: list[tuple[str, str]] = []
        for line in lines[1 : _NUM_MERGES + 1]:
            pair = line.split()
            if len(pair) != 2:
                msg = f"{path} is not a CLIP BPE merges file (line {line!r})"
                raise ValueError(msg)
            merges.append((pair[0], pair[1]))
        if len(merges) != _NUM_MERGES:
            msg = f"{path} holds {len(merges)} merges, CLIP needs {_NUM_MERGES}"
            raise ValueError(msg)
        self._byte_encoder = _byte_to_unicode()
        symbols = list(self._byte_encoder.values())
        vocab = symbols + [s + _WORD_END for s in symbols] + ["".join(m) for m in merges]
        vocab += list(_SPECIALS)
        self.encoder: dict[str, int] = {token: i for i, token in enumerate(vocab)}
        self._ranks = {m: i for i, m in enumerate(merges)}
        self._cache: dict[str, tuple[str, ...]] = {s: (s,) for s in _SPECIALS}
        if self.encoder[_SPECIALS[0]] != START_TOKEN or self.encoder[_SPECIALS[1]] != END_TOKEN:
            msg = f"{path} gives special-token ids other than {START_TOKEN}/{END_TOKEN}"
            raise ValueError(msg)

    def _bpe(self, word: str) -> tuple[str, ...]:
        """Splits one pre-token (already byte-mapped) into vocabulary symbols."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = [*word[:-1], word[-1] + _WORD_END]
        while len(parts) > 1:
            # Merge every occurrence of the lowest-ranked adjacent pair, left to right.
            ranked = [
                (self._ranks.get((a, b), _NUM_MERGES), (a, b))
                for a, b in zip(parts, parts[1:], strict=False)
            ]
            rank, (first, second) = min(ranked, key=lambda item: item[0])
            if rank == _NUM_MERGES:
                break
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        result = tuple(parts)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache = {s: (s,) for s in _SPECIALS}
        self._cache[word] = result
        return result

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text` without start/end tokens."""
        ids: list[int] = []
        for piece in _PATTERN.findall(clean_text(text)):
            mapped = "".join(self._byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[symbol] for symbol in self._bpe(mapped))
        return ids

    def __call__(
        self, texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH
    ) -> torch.Tensor:
        """Token ids, one row per text.

        Args:
            texts: one string or a sequence of strings.
            context_length: row length; texts longer than `context_length - 2` BPE tokens are
                truncated and end with the end token.

        Returns:
            LongTensor [B, context_length] (B = 1 for a single string, unlike ImageBind's
            tokenizer which squeezes that case), zero-padded.
        """
        if isinstance(texts, str):
            texts = [texts]
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [START_TOKEN, *self.encode(text)][: context_length - 1] + [END_TOKEN]
            result[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return result


@cache
def default_tokenizer() -> ClipTokenizer:
    """The tokenizer over the vendored vocabulary, built once per process."""
    return ClipTokenizer()


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """ImageBind text ids: LongTensor [B, 77] (see `ClipTokenizer.__call__`)."""
    return default_tokenizer()(texts, context_length)
