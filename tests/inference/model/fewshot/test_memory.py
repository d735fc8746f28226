import numpy as np
import pytest
import torch

from inference.model.fewshot.memory import build_memory, gaussian_blur, memory_map


def direct_map(query, refs, grid):
    """1 - max cosine per patch, straight from the definition, one tap."""
    q = query / np.linalg.norm(query, axis=-1, keepdims=True)
    r = refs.reshape(-1, refs.shape[-1])
    r = r / np.linalg.norm(r, axis=-1, keepdims=True)
    out = np.empty(q.shape[:2])
    for b in range(q.shape[0]):
        for n in range(q.shape[1]):
            out[b, n] = 1.0 - max(float(q[b, n] @ row) for row in r)
    return out.reshape(q.shape[0], *grid)


def test_map_matches_the_formula_at_patch_resolution():
    gen = torch.Generator().manual_seed(0)
    grid = (4, 4)
    queries = [torch.randn(2, 16, 8, generator=gen) for _ in range(3)]
    refs = [torch.randn(3, 16, 8, generator=gen) for _ in range(3)]
    amap = memory_map(queries, build_memory(refs), grid=grid, out_size=grid, sigma=0)
    expected = np.mean([direct_map(q.numpy(), r.numpy(), grid)
                        for q, r in zip(queries, refs, strict=True)], axis=0)
    np.testing.assert_allclose(amap.numpy(), expected, atol=1e-5)


def test_reference_patches_score_zero_and_novel_patches_score_high():
    gen = torch.Generator().manual_seed(1)
    ref = torch.randn(1, 16, 32, generator=gen)
    query = ref.clone()
    query[0, 5] = torch.randn(32, generator=gen)  # one novel patch
    amap = memory_map([query], build_memory([ref]), grid=(4, 4), out_size=(4, 4), sigma=0)[0]
    assert amap.flatten()[5] > 0.5
    others = torch.cat([amap.flatten()[:5], amap.flatten()[6:]])
    assert torch.all(others.abs() < 1e-5)


def test_leave_one_out_ignores_the_excluded_reference():
    gen = torch.Generator().manual_seed(2)
    refs = torch.randn(2, 16, 8, generator=gen)
    memory = build_memory([refs])
    own = memory_map([refs[:1]], memory, grid=(4, 4), out_size=(4, 4), sigma=0)
    first = torch.arange(32) < 16  # rows of reference 0
    loo = memory_map([refs[:1]], memory, grid=(4, 4), out_size=(4, 4), sigma=0,
                       exclude=[first])
    assert own.abs().max() < 1e-5
    expected = direct_map(refs[:1].numpy(), refs[1:].numpy(), (4, 4))
    np.testing.assert_allclose(loo.numpy(), expected, atol=1e-5)


def test_blur_preserves_mass_and_spreads_a_peak():
    maps = torch.zeros(1, 41, 41)
    maps[0, 20, 20] = 1.0
    blurred = gaussian_blur(maps, sigma=2.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-4)
    assert blurred[0, 20, 20] < 0.1
    assert blurred[0, 20, 22] > blurred[0, 20, 26] > 0


def test_image_descriptor_is_the_normalised_mean_of_the_deepest_tap():
    from inference.model.fewshot.memory import image_descriptors

    gen = torch.Generator().manual_seed(3)
    taps = [torch.randn(2, 16, 8, generator=gen) for _ in range(3)]
    expected = taps[-1].mean(1) / taps[-1].mean(1).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(image_descriptors(taps), expected)


def test_coreset_keeps_far_rows_and_covers_the_rest():
    from inference.model.fewshot.memory import coreset_indices

    gen = torch.Generator().manual_seed(4)
    cluster = torch.randn(200, 16, generator=gen) * 0.01  # 200 near-duplicates
    outliers = torch.eye(16)[:3] * 5  # three rare but normal patches
    rows = torch.cat([cluster, outliers])
    kept = coreset_indices(rows, 8, projection_dim=0)
    assert len(set(kept.tolist())) == 8
    assert {200, 201, 202} <= set(kept.tolist())
    # Every row lies close to some kept row.
    assert torch.cdist(rows, rows[kept]).amin(1).max() < 0.1
    assert torch.equal(coreset_indices(rows, 500), torch.arange(203))
