"""CLIP tokenizer: ids equal to ImageBind's SimpleTokenizer on tricky strings.

The expected ids were produced by the official `SimpleTokenizer` class (ImageBind
imagebind/models/multimodal_preprocessors.py at commit 53680b0, executed unchanged with its
own copy of bpe_simple_vocab_16e6.txt.gz, ftfy 6.3.1, regex 2026.11.19), not by this module.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest
import torch

from inference.model.anomalygpt.clip_tokenizer import (
    END_TOKEN,
    START_TOKEN,
    ClipTokenizer,
    clean_text,
    default_vocab_path,
    tokenize,
)

# sha256 of OpenAI CLIP's clip/bpe_simple_vocab_16e6.txt.gz (same git blob 7b5088a in ImageBind).
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"

# fmt: off
OFFICIAL_IDS = {
    "": [49406, 49407],
    "a photo of a flawless bottle.": [49406, 320, 1125, 539, 320, 15531, 5392, 269, 49407],
    "Hello, World!!! ... ?!": [49406, 3306, 267, 1002, 995, 678, 2835, 49407],
    "Café naïve résumé — “quotes” ñ 日本語": [
        49406, 15304, 1097, 35689, 563, 29106, 7054, 4166, 2005, 257, 5808, 257, 127, 365,
        39121, 44353, 34002, 508, 49407,
    ],
    "fish &amp; chips &amp;amp; &lt;b&gt;": [49406, 2759, 261, 8855, 261, 283, 321, 285, 49407],
    "   lots \t of\n\n  whitespace   ": [49406, 2958, 539, 4699, 2138, 49407],
    "don't we're they'll I'M 3.14 2024": [
        49406, 847, 713, 649, 982, 889, 1342, 328, 880, 274, 269, 272, 275, 273, 271, 273, 275,
        49407,
    ],
    "a broken capsule with defect": [49406, 320, 5107, 20627, 593, 44013, 49407],
    "mojibake: cafÃ©": [49406, 617, 3252, 11878, 281, 15304, 49407],  # ftfy repairs "Ã©"
}
# fmt: on


def test_vendored_vocab_is_openai_clip_file() -> None:
    digest = hashlib.sha256(default_vocab_path().read_bytes()).hexdigest()
    assert digest == VOCAB_SHA256
    assert (default_vocab_path().parent / "LICENSE-CLIP-BPE-VOCAB").read_text().startswith("MIT")


@pytest.mark.parametrize("text", list(OFFICIAL_IDS))
def test_ids_match_official(text: str) -> None:
    ids = tokenize(text)
    expected = OFFICIAL_IDS[text]
    assert ids.shape == (1, 77)
    assert ids.dtype == torch.long
    assert ids[0, : len(expected)].tolist() == expected
    assert not ids[0, len(expected) :].any()  # zero padding


def test_batch_rows_are_independent() -> None:
    texts = ["a photo of the screw.", "broken screw"]
    ids = tokenize(texts)
    assert ids.shape == (2, 77)
    assert ids[0, :8].tolist() == [49406, 320, 1125, 539, 518, 14225, 269, 49407]
    assert ids[1, :4].tolist() == [49406, 5107, 14225, 49407]
    assert not ids[0, 8:].any()
    assert not ids[1, 4:].any()


def test_long_text_keeps_end_token_at_76() -> None:
    ids = tokenize(" ".join(["anomaly"] * 100))  # 100 BPE tokens of "anomaly</w>" (46811)
    assert ids.shape == (1, 77)
    assert ids[0].tolist() == [START_TOKEN] + [46811] * 75 + [END_TOKEN]
    assert ids[0].argmax().item() == 76  # where the text head reads


def test_exactly_full_text_is_not_cut() -> None:
    ids = tokenize(" ".join(["anomaly"] * 75))
    assert ids[0].tolist() == [START_TOKEN] + [46811] * 75 + [END_TOKEN]


def test_clean_text_unescapes_twice_and_collapses_whitespace() -> None:
    assert clean_text("  Fish &amp;amp;\n\tChips ") == "fish & chips"


def test_bad_vocab_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "vocab.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("#version: 0.2\na b\n")
    with pytest.raises(ValueError, match="merges"):
        ClipTokenizer(path)
