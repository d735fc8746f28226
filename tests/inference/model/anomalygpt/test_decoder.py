"""Image decoder maps against the formulas of the AnomalyGPT reference, and the state prompts."""

import numpy as np
import pytest
import torch

from inference.model.anomalygpt.decoder import ImageDecoder, reference_map
from inference.model.anomalygpt.imagebind import ImageBindConfig, ImageBindEncoder, tokenize
from inference.model.anomalygpt.state_prompts import state_prompt_texts, text_features

torch.set_num_threads(1)

WIDTH, EMBED, SIDE = 12, 8, 4  # tiny tap width, joint width, patch grid


def bilinear_align_corners(grid: np.ndarray, size: int) -> np.ndarray:
    """Upsample [h, w] to [size, size] with align_corners=True, written out point by point."""
    h, w = grid.shape
    out = np.empty((size, size))
    for i in range(size):
        y = i * (h - 1) / (size - 1)
        y0 = min(int(np.floor(y)), h - 2)
        for j in range(size):
            x = j * (w - 1) / (size - 1)
            x0 = min(int(np.floor(x)), w - 2)
            dy, dx = y - y0, x - x0
            out[i, j] = ((1 - dy) * (1 - dx) * grid[y0, x0] + (1 - dy) * dx * grid[y0, x0 + 1]
                         + dy * (1 - dx) * grid[y0 + 1, x0] + dy * dx * grid[y0 + 1, x0 + 1])
    return out


def random_taps(batch: int, gen: torch.Generator, taps: int = 4) -> list[torch.Tensor]:
    return [torch.randn(batch, 1 + SIDE * SIDE, WIDTH, generator=gen) for _ in range(taps)]


def test_zero_shot_map_matches_the_reference_formula():
    gen = torch.Generator().manual_seed(0)
    decoder = ImageDecoder(WIDTH, EMBED, taps=4)
    taps = random_taps(2, gen)
    # Two close text features keep 100 * logit differences near 1: the softmax stays unsaturated.
    base = torch.randn(1, EMBED, generator=gen)
    text = torch.nn.functional.normalize(base + 0.03 * torch.randn(2, EMBED, generator=gen), dim=-1)
    size = 9
    result = decoder.zero_shot_map(taps, text, out_size=size)

    t = text.numpy().astype(np.float64)
    expected_taps = []
    for fc, tap in zip(decoder.fc, taps, strict=True):
        w, b = fc.weight.detach().double().numpy(), fc.bias.detach().double().numpy()
        per_image = []
        for image in tap.double().numpy():
            maps = np.zeros((2, size, size))
            logits = np.zeros((2, SIDE, SIDE))
            for n, token in enumerate(image[1:]):  # CLS dropped, row-major patches
                z = w @ token + b
                z = z / np.linalg.norm(z)
                for c in range(2):
                    logits[c, n // SIDE, n % SIDE] = 100.0 * float(z @ t[c])
            for c in range(2):
                maps[c] = bilinear_align_corners(logits[c], size)
            e = np.exp(maps - maps.max(axis=0))
            per_image.append(e / e.sum(axis=0))  # softmax over (normal, abnormal) per pixel
        expected_taps.append(np.stack(per_image))
    expected = np.mean([p[:, 1] for p in expected_taps], axis=0)
    assert 0.05 < expected.mean() < 0.95
    assert expected.std() > 0.05

    assert result.map.shape == (2, size, size)
    np.testing.assert_allclose(result.map.detach().numpy(), expected, atol=1e-4)
    assert len(result.per_tap) == 4
    for got, want in zip(result.per_tap, expected_taps, strict=True):
        assert got.shape == (2, 2, size, size)
        np.testing.assert_allclose(got.detach().numpy(), want, atol=1e-4)


def test_zero_shot_map_takes_per_image_text_features():
    gen = torch.Generator().manual_seed(1)
    decoder = ImageDecoder(WIDTH, EMBED, taps=2)
    taps = random_taps(2, gen, taps=2)
    text = torch.nn.functional.normalize(torch.randn(2, 2, EMBED, generator=gen), dim=-1)
    both = decoder.zero_shot_map(taps, text, out_size=8).map
    for b in range(2):
        alone = decoder.zero_shot_map([t[b : b + 1] for t in taps], text[b], out_size=8).map
        torch.testing.assert_close(both[b : b + 1], alone)


def test_zero_shot_map_rejects_wrong_tap_count_and_text_shape():
    decoder = ImageDecoder(WIDTH, EMBED, taps=4)
    taps = random_taps(1, torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="3 taps"):
        decoder.zero_shot_map(taps[:3], torch.randn(2, EMBED))
    with pytest.raises(ValueError, match="text_features"):
        decoder.zero_shot_map(taps, torch.randn(3, EMBED))


def direct_few_shot(query: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """1 - max cosine per query patch over all reference patches; CLS dropped. [N]."""
    out = np.empty(query.shape[0] - 1)
    memory = refs[:, 1:].reshape(-1, refs.shape[-1])
    for n, q in enumerate(query[1:]):
        out[n] = 1.0 - max(float(q @ r) / (np.linalg.norm(q) * np.linalg.norm(r)) for r in memory)
    return out


def test_few_shot_map_matches_the_reference_formula():
    gen = torch.Generator().manual_seed(3)
    query = random_taps(2, gen)
    refs = [torch.randn(3, 1 + SIDE * SIDE, WIDTH, generator=gen) for _ in range(4)]
    size = 7
    got = reference_map(query, refs, out_size=size)
    # Reference order: mean of max similarities over taps at 16x16, upsample, 1 - sim.
    expected = np.stack([
        bilinear_align_corners(
            np.mean([direct_few_shot(q[b].double().numpy(), r.double().numpy())
                     for q, r in zip(query, refs, strict=True)], axis=0).reshape(SIDE, SIDE),
            size,
        )
        for b in range(2)
    ])
    assert got.shape == (2, size, size)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_few_shot_map_per_query_references_equal_shared_ones():
    gen = torch.Generator().manual_seed(4)
    query = random_taps(2, gen, taps=2)
    refs = [torch.randn(2, 1 + SIDE * SIDE, WIDTH, generator=gen) for _ in range(2)]
    shared = reference_map(query, refs, out_size=8)
    own = reference_map(query, [r.unsqueeze(0).expand(2, -1, -1, -1) for r in refs], out_size=8)
    torch.testing.assert_close(shared, own)
    # A query identical to a reference scores 0 everywhere.
    same = reference_map([r[:1] for r in refs], refs, out_size=8)
    assert float(same.abs().max()) < 1e-5


def test_state_prompt_texts_are_the_reference_lists():
    normal, abnormal = state_prompt_texts("metal_nut")
    assert len(normal) == 14
    assert len(abnormal) == 10
    assert normal[:4] == [
        "a photo of a metal nut.",
        "a photo of the metal nut.",
        "a photo of a flawless metal nut.",
        "a photo of the flawless metal nut.",
    ]
    assert normal[-2:] == ["a photo of a metal nut without damage.",
                           "a photo of the metal nut without damage."]
    assert set(normal) == {
        template.format(state.format("metal nut"))
        for state in ["{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw",
                      "{} without defect", "{} without damage"]
        for template in ["a photo of a {}.", "a photo of the {}."]
    }
    assert abnormal == [
        "a photo of a damaged metal nut.", "a photo of the damaged metal nut.",
        "a photo of a broken metal nut.", "a photo of the broken metal nut.",
        "a photo of a metal nut with flaw.", "a photo of the metal nut with flaw.",
        "a photo of a metal nut with defect.", "a photo of the metal nut with defect.",
        "a photo of a metal nut with damage.", "a photo of the metal nut with damage.",
    ]


def test_text_features_average_each_side_and_renormalise():
    torch.manual_seed(5)
    encoder = ImageBindEncoder(ImageBindConfig.tiny()).eval()
    features = text_features(encoder, "bottle")
    assert features.shape == (2, ImageBindConfig.tiny().embed_dim)
    normal, abnormal = state_prompt_texts("bottle")
    with torch.no_grad():
        for row, sentences in zip(features, (normal, abnormal), strict=True):
            e = encoder.encode_text(tokenize(sentences)).double()
            # The reference embeds with the logit scale applied; it cancels here.
            e = e * encoder.text_logit_scale().double()
            mean = e.mean(dim=0)
            torch.testing.assert_close(row.double(), mean / mean.norm(), atol=1e-5, rtol=0)
