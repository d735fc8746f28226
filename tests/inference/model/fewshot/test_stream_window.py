"""Stream memory: mutual scoring against the recent frames of a product."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from inference.model.fewshot.calibration import threshold_from_normal_scores
from inference.model.fewshot.stream import (
    StreamWindow,
    combine_with_pool,
    frame_distances,
    lowest_fraction_mean,
)

PATCHES, CHANNELS = 16, 32


def normal_frame(generator: torch.Generator, prototypes: torch.Tensor) -> torch.Tensor:
    """[1, N, C]: every patch a small perturbation of one of the normal prototypes."""
    picks = torch.randint(len(prototypes), (PATCHES,), generator=generator)
    return (prototypes[picks] + 0.05 * torch.randn(PATCHES, CHANNELS, generator=generator))[None]


@pytest.fixture
def scene() -> tuple[torch.Generator, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn(6, CHANNELS, generator=generator)
    defect = torch.randn(CHANNELS, generator=generator)
    return generator, prototypes, defect


def test_defect_absent_from_window_scores_high_and_normal_low(scene):
    generator, prototypes, defect = scene
    window = StreamWindow(8, fraction=0.3)
    for _ in range(8):
        window.push([normal_frame(generator, prototypes)])
    query = normal_frame(generator, prototypes)
    query[0, 5] = defect
    distances = window.distances([query])
    assert distances is not None
    assert distances.shape == (1, PATCHES)
    normal = torch.cat([distances[0, :5], distances[0, 6:]])
    assert distances[0, 5] > 0.5
    assert normal.max() < 0.05
    clean = window.distances([normal_frame(generator, prototypes)])
    assert clean is not None
    assert clean.max() < 0.05


def test_defective_frames_in_the_window_do_not_hide_a_defect(scene):
    # Two of nine window frames carry the same defect; the lowest 30 % (3 frames) still
    # include a clean frame, so the defect keeps a clearly higher score than normal patches.
    generator, prototypes, defect = scene
    window = StreamWindow(9, fraction=0.3)
    for index in range(9):
        frame = normal_frame(generator, prototypes)
        if index in (2, 6):
            frame[0, 3] = defect
        window.push([frame])
    query = normal_frame(generator, prototypes)
    query[0, 3] = defect
    distances = window.distances([query])
    assert distances is not None
    assert distances[0, 3] > 5 * torch.cat([distances[0, :3], distances[0, 4:]]).max()


def test_window_is_bounded_and_scores_only_when_ready(scene):
    generator, prototypes, _ = scene
    window = StreamWindow(5, fraction=0.3, min_frames=4)
    assert window.distances([normal_frame(generator, prototypes)]) is None
    for _ in range(3):
        window.push([normal_frame(generator, prototypes)])
    assert not window.ready
    assert window.distances([normal_frame(generator, prototypes)]) is None
    batch = torch.cat([normal_frame(generator, prototypes) for _ in range(17)])
    window.push([batch])
    assert len(window) == 5
    assert window.nbytes() == 5 * PATCHES * CHANNELS * 4  # patches only (no global part)
    descriptors = F.normalize(batch.mean(1), dim=-1)
    window.push([batch], descriptors=descriptors, pool_global=torch.full((17,), 0.1))
    assert window.nbytes() == 5 * (PATCHES + 1) * CHANNELS * 4  # patches and descriptor
    window.clear()
    assert len(window) == 0
    assert window.global_distances(descriptors) is None


def test_frames_judged_anomalous_stay_out_of_the_window(scene):
    generator, prototypes, _ = scene
    window = StreamWindow(8, min_frames=1)
    batch = torch.cat([normal_frame(generator, prototypes) for _ in range(3)])
    window.push([batch], keep=[True, False, True])
    assert len(window) == 2
    kept, left_out = window.distances([batch[0:1]]), window.distances([batch[1:2]])
    assert kept is not None
    assert left_out is not None
    assert kept.max() < 1e-5  # the kept frame finds itself in the window
    assert left_out.min() > 1e-3  # the left-out one does not


def test_lowest_fraction_mean_takes_at_least_one_value():
    distances = torch.tensor([[[0.9, 0.1, 0.5, 0.3]]])
    assert lowest_fraction_mean(distances, 0.5).item() == pytest.approx(0.2)
    assert lowest_fraction_mean(distances, 0.01).item() == pytest.approx(0.1)
    per_frame = frame_distances([torch.eye(2)[None]], [[torch.eye(2)], [torch.eye(2)[[1, 0]]]])
    assert torch.allclose(per_frame, torch.zeros(1, 2, 2), atol=1e-6)


def test_the_stream_only_lowers_pool_distances():
    generator = torch.Generator().manual_seed(1)
    pool, stream = torch.rand(2, 64, generator=generator)
    for weight in (0.0, 0.5, 1.0):
        combined = combine_with_pool(pool, stream, weight)
        assert torch.all(combined <= pool)  # the pool's threshold stays an upper bound
    assert torch.equal(combine_with_pool(pool, stream, 0.0), pool)
    assert torch.equal(combine_with_pool(pool, stream, 1.0), torch.minimum(pool, stream))
    with pytest.raises(ValueError, match="weight"):
        combine_with_pool(pool, stream, 1.5)


def test_two_closest_frames_decide_by_default(scene):
    # 0.15 of 16 frames: a normal patch needs close matches in only two recent frames.
    generator, prototypes, _ = scene
    window = StreamWindow(16)
    frames = [normal_frame(generator, prototypes) for _ in range(16)]
    for frame in frames:
        window.push([frame])
    query = [normal_frame(generator, prototypes)]
    per_frame = frame_distances(query, [[F.normalize(frame[0], dim=-1)] for frame in frames])
    expected = per_frame.topk(2, dim=-1, largest=False).values.mean(-1)
    distances = window.distances(query)
    assert distances is not None
    assert torch.allclose(distances, expected, atol=1e-6)


def descriptor_scene(seed: int):
    """Unit image descriptors: ``draw(offset, count)`` around one centre, and 8 references.

    References come from one band of the surface (offset 0); the line shows another (as on
    `agpt data synth`, whose test crops come from another band of the photo than its
    references). The third axis is how a texture-statistics defect moves the descriptor.
    """
    generator = torch.Generator().manual_seed(seed)
    variation = 0.05 * torch.randn(3, CHANNELS, generator=generator)  # how normals vary
    centre = torch.randn(CHANNELS, generator=generator)

    def draw(offset: tuple[float, float, float], count: int) -> torch.Tensor:
        spread = torch.randn(count, 3, generator=generator) + torch.tensor(offset)
        return F.normalize(centre + spread @ variation, dim=-1)

    references = draw((0.0, 0.0, 0.0), 8)
    similarity = references @ references.t()
    similarity.fill_diagonal_(-1.0)
    bound = threshold_from_normal_scores((1.0 - similarity.amax(1)).numpy(),
                                         false_alarm_rate=0.005)
    return draw, references, bound


def judge_globally(window: StreamWindow, references: torch.Tensor, bound,
                   batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """As the detector does: the lower of pool and stream distance, held to the lower of the
    references' and the window's bound once the window has one (else the pool distance to
    the references' bound); frames judged normal enter the window.

    Returns the flags and the distances judged.
    """
    pool = 1.0 - (batch @ references.t()).amax(1)
    recent = window.global_distances(batch)
    streamed = window.global_calibration(false_alarm_rate=0.005, weight=1.0)
    if recent is None or streamed is None:
        distances, threshold = pool, bound.threshold
    else:
        distances = combine_with_pool(pool, recent, 1.0)
        threshold = min(streamed.threshold, bound.threshold)
    flagged = distances > threshold
    # Frames whose patches are all the descriptor: their image descriptor is ``batch``.
    window.push([batch[:, None].expand(-1, PATCHES, -1)], keep=(~flagged).tolist(),
                descriptors=batch, pool_global=pool)
    return flagged, distances


def test_streamed_global_bound_is_the_windows_leave_one_out_bound():
    draw, references, _ = descriptor_scene(3)
    window = StreamWindow(16, global_min_frames=8)
    frames = draw((2.0, 0.0, 0.0), 12)
    pool = 1.0 - (frames @ references.t()).amax(1)
    window.push([frames[:7, None].expand(-1, PATCHES, -1)], descriptors=frames[:7],
                pool_global=pool[:7])
    assert window.global_calibration(false_alarm_rate=0.005, weight=1.0) is None  # 7 < 8
    assert window.global_distances(frames) is None
    window.push([frames[7:, None].expand(-1, PATCHES, -1)], descriptors=frames[7:],
                pool_global=pool[7:])
    found = window.global_calibration(false_alarm_rate=0.005, weight=1.0)
    assert found is not None
    # By hand: each frame against the 11 others, the mean of the closest two (0.15 of 11).
    expected = []
    for index in range(12):
        others = torch.cat([frames[:index], frames[index + 1:]])
        nearest = (1.0 - others @ frames[index]).sort().values[:2].mean()
        expected.append(min(float(pool[index]), float(nearest)))
    by_hand = threshold_from_normal_scores(np.array(expected), false_alarm_rate=0.005)
    # float32 cosines: distances of ~0.01 carry ~1e-5 relative error, which the log-t bound
    # (t(0.995; 11) * spread) amplifies to ~1e-4 (1.2e-4 measured with torch 2.13's kernels);
    # the mean of the closest one or three frames instead of two moves it by over 15 %.
    assert found.threshold == pytest.approx(by_hand.threshold, rel=1e-3)
    assert found.method == "stream-leave-one-out"


def test_a_replayed_image_joins_the_global_window_once():
    # Copies add no normal variety, and a window of copies would have a bound of zero spread.
    draw, references, _ = descriptor_scene(6)
    window = StreamWindow(16, global_min_frames=4)
    frame = draw((1.0, 0.0, 0.0), 1)
    pool = 1.0 - (frame @ references.t()).amax(1)
    for _ in range(6):
        window.push([frame[:, None].expand(-1, PATCHES, -1)], descriptors=frame,
                    pool_global=pool)
    assert len(window) == 6  # the patch window takes every frame
    assert not window.global_ready  # the global part holds the image once
    others = draw((1.0, 0.0, 0.0), 3)
    window.push([others[:, None].expand(-1, PATCHES, -1)], descriptors=others,
                pool_global=1.0 - (others @ references.t()).amax(1))
    assert window.global_ready
    bound = window.global_calibration(false_alarm_rate=0.005, weight=1.0)
    assert bound is not None
    assert min(bound.normal_scores) > 1e-4


def test_global_bound_holds_for_normals_of_another_band_and_a_run_of_defects_stays_flagged():
    # The references' leave-one-out bound flags many normals of the other band; the line's
    # normals find close descriptors among the window's frames, a texture-statistics defect
    # finds none, and the window's own bound keeps it above the threshold.
    draw, references, bound = descriptor_scene(2)
    normals = draw((4.0, 0.0, 0.0), 64)
    alone = (1.0 - (normals @ references.t()).amax(1)) > bound.threshold
    assert alone.float().mean() > 0.25  # the references' bound flags many of the other band
    window = StreamWindow(16)
    flagged = torch.cat([judge_globally(window, references, bound, normals[start:start + 8])[0]
                         for start in range(0, 64, 8)])
    assert flagged[16:].sum() <= 1  # once the window holds the band's normals
    defect = draw((4.0, 0.0, 12.0), 1)  # the band's texture, its statistics shifted
    held = len(window)
    run = torch.cat([judge_globally(window, references, bound, defect.expand(8, -1))[0]
                     for _ in range(3)])
    assert run.all()  # flagged on every part: the run never enters the window
    assert len(window) == held


def test_the_windows_bound_catches_a_subtle_defect_the_references_bound_misses():
    # References spread wider than the line's current parts (the references' bound is loose
    # for them): a subtle shift of the image statistics stays under the references' bound,
    # pool-only or streamed (the CI case of a textile "global" frame sunk under it). The
    # window's bound is made of the streamed distances of the line's own normal frames, so
    # it is as tight as they are: it flags the shifted parts, and new normals stay under it.
    draw, references, bound = descriptor_scene(4)
    window = StreamWindow(16)
    for _ in range(2):
        judge_globally(window, references, bound, draw((0.0, 0.0, 0.0), 8))
    assert window.global_ready
    subtle = draw((0.0, 0.0, 6.0), 64)
    pool = 1.0 - (subtle @ references.t()).amax(1)
    assert not (pool > bound.threshold).any()  # the references' bound misses them all
    normals = torch.cat([judge_globally(window, references, bound,
                                        draw((0.0, 0.0, 0.0), 8))[0] for _ in range(8)])
    assert normals.sum() <= 1  # of 64
    before = window.global_calibration(false_alarm_rate=0.005, weight=1.0)
    flagged, _ = judge_globally(window, references, bound, subtle)
    assert flagged.float().mean() > 0.4
    assert before is not None
    assert before.threshold < bound.threshold


def test_invalid_windows_are_refused():
    with pytest.raises(ValueError, match="at least one frame"):
        StreamWindow(0)
    with pytest.raises(ValueError, match="fraction"):
        StreamWindow(4, fraction=0.0)
    frames = torch.zeros(2, PATCHES, CHANNELS)
    with pytest.raises(ValueError, match="go together"):
        StreamWindow(4).push([frames], descriptors=frames.mean(1))


# ---------------------------------------------------------------- in the detector
def streaming_and_plain(cache_dir):
    """cpu-small with a 4-frame stream window (the global part streamed too), and without."""
    from dataclasses import replace

    from inference.profiles import build_detector, get_profile

    profile = get_profile("cpu-small")
    return tuple(build_detector(replace(profile, detector=replace(
        profile.detector, stream_window=window, stream_global=window > 0,
        stream_global_frames=4)),
        cache_dir=cache_dir) for window in (4, 0))


@pytest.mark.slow
def test_pool_change_and_restart_start_from_an_empty_window(model_cache_dir, textile_files,
                                                            one_torch_thread):
    images = [Image.open(p).convert("RGB") for p in textile_files["nominal"][:10]]
    references, frames = images[:2], images[2:]
    streaming, plain = streaming_and_plain(model_cache_dir)
    for detector in (streaming, plain):
        detector.set_references("p", references)
    assert plain.stream("p") is None
    # Until min_frames are in, the verdicts are the pool's alone (as after a restart).
    first = streaming.detect("p", frames[:4])
    alone = plain.detect("p", frames[:4])
    assert [d.score for d in first] == pytest.approx([d.score for d in alone], rel=1e-5)
    window = streaming.stream("p")
    assert window is not None
    assert len(window) == sum(not d.anomalous for d in first)  # flagged frames stay out
    later = streaming.detect("p", frames[4:8])
    assert len(window) <= 4  # bounded: the oldest frames were dropped
    assert streaming.evidence("p", later[0])["stream_frames"] == len(window)
    # The stream lowers normal frames' maps (their variety is in the window).
    if len(window) >= window.min_frames:
        assert np.mean([d.local_score for d in later]) < np.mean(
            [d.local_score for d in plain.detect("p", frames[4:8])])
    # A pool change empties the window: the next frame is judged by the new pool alone.
    streaming.set_references("p", references[:1])
    plain.set_references("p", references[:1])
    assert len(streaming.stream("p")) == 0
    assert streaming.detect("p", frames[6:7])[0].score == pytest.approx(
        plain.detect("p", frames[6:7])[0].score, rel=1e-5)


@pytest.mark.slow
def test_the_global_part_is_streamed_and_only_lowered(model_cache_dir, textile_files,
                                                      one_torch_thread):
    # Three references switch the global part on; its distance is the pool's until the
    # window is ready, never above it after, and a pool change forgets the frames.
    images = [Image.open(p).convert("RGB") for p in textile_files["nominal"][:11]]
    references, frames = images[:3], images[3:]
    detectors = streaming_and_plain(model_cache_dir)
    for detector in detectors:
        assert detector.set_references("p", references).global_calibration is not None
    streaming, plain = detectors
    first, alone = (detector.detect("p", frames[:4]) for detector in detectors)
    assert [d.global_score for d in first] == pytest.approx([d.global_score for d in alone])
    assert streaming.evidence("p", first[0])["global_bound"] == "references"
    window = streaming.stream("p")
    assert window is not None
    assert window.ready  # the four normal frames were admitted
    later, pool_only = (detector.detect("p", frames[4:8]) for detector in detectors)
    streamed = [d.global_score for d in later]
    assert streaming.evidence("p", later[0])["global_bound"] == "stream"
    assert "global_bound" not in plain.evidence("p", pool_only[0])  # not streamed: no claim
    assert all(s is not None and p is not None and s <= p + 1e-6
               for s, p in zip(streamed, [d.global_score for d in pool_only], strict=True))
    assert any(s < p - 1e-4 for s, p in zip(streamed, [d.global_score for d in pool_only],
                                            strict=True))
    streaming.set_references("p", references)
    assert streaming.stream("p").global_distances(
        streaming.product("p").descriptors) is None


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["color", "hole"])
def test_a_defect_repeated_on_consecutive_parts_stays_flagged(cpu_detector, tmp_path, kind,
                                                              one_torch_thread):
    # The same drawn defect pasted on 16 consecutive brick parts after 16 normal ones, 1
    # shot, the default stream (16 frames): once flagged, it never enters the window, so its
    # stream distance comes from clean frames and the next copies are flagged too.
    from inference.evaluation.mvtec import reference_paths, test_items
    from inference.evaluation.synthetic import build_textures_set
    from inference.model.fewshot.fewshot_detector import FewShotDetector

    root = build_textures_set(tmp_path / "synth", categories=("brick",), seed=0, n_train=1,
                              n_test_good=32, n_test_defect=6)
    detector = FewShotDetector(cpu_detector.extractor, cpu_detector.config)
    assert detector.config.stream_window == 16
    detector.set_references("brick", [Image.open(reference_paths(root, "brick", 1)[0])
                                      .convert("RGB")])
    items = test_items(root, "brick")
    source = next(item for item in items if item.defect_type == kind)
    assert source.mask_path is not None
    mask = np.asarray(Image.open(source.mask_path).convert("L")) > 127
    defect = np.asarray(Image.open(source.path).convert("RGB"))
    goods = [Image.open(item.path).convert("RGB") for item in items if not item.anomalous]
    pasted = []
    for image in goods[16:32]:
        array = np.asarray(image).copy()
        array[mask] = defect[mask]
        pasted.append(Image.fromarray(array))
    frames = goods[:16] + pasted
    flags = [d.anomalous for start in range(0, 32, 8)
             for d in detector.detect("brick", frames[start:start + 8])]
    window = detector.stream("brick")
    assert window is not None
    assert sum(flags[:16]) <= 1
    assert flags[16:] == [True] * 16
    assert len(window) == 16 - sum(flags[:16])  # the normal frames only: no copy got in


def push_with_descriptors(window: StreamWindow, frames: torch.Tensor,
                          keep: list[bool] | None = None) -> None:
    """Push [B, N, C] frames with their image descriptors (mean patch), as ``stream_global``."""
    descriptors = F.normalize(frames.mean(dim=1), dim=-1)
    window.push([frames], keep, descriptors=descriptors,
                pool_global=torch.ones(len(frames)))


def test_global_distance_to_the_window_is_low_for_the_window_look_and_high_for_a_shift(scene):
    # Frames of one look (the same prototype mix) are close at the image level; a frame
    # whose statistics shifted (every patch moved towards a new direction) is far from all.
    generator, prototypes, defect = scene
    window = StreamWindow(8, fraction=0.25)
    assert window.global_distances(F.normalize(torch.randn(1, CHANNELS), dim=-1)) is None
    for _ in range(8):
        push_with_descriptors(window, normal_frame(generator, prototypes))
    normal = F.normalize(normal_frame(generator, prototypes).mean(dim=1), dim=-1)
    shifted = F.normalize((normal_frame(generator, prototypes) + 3 * defect).mean(dim=1),
                          dim=-1)
    distances = window.global_distances(torch.cat([normal, shifted]))
    assert distances is not None
    assert distances.shape == (2,)
    assert distances[0] < 0.25  # 16 patches drawn from 6 prototypes: their mix varies
    assert distances[1] > 4 * distances[0]


def test_global_window_keeps_only_frames_judged_normal(scene):
    generator, prototypes, defect = scene
    window = StreamWindow(4, fraction=0.5, global_min_frames=4)
    shifted = normal_frame(generator, prototypes) + 3 * defect
    for _ in range(4):
        push_with_descriptors(window, torch.cat([normal_frame(generator, prototypes), shifted]),
                              keep=[True, False])
    query = F.normalize(shifted.mean(dim=1), dim=-1)
    distances = window.global_distances(query)
    assert distances is not None
    assert distances[0] > 0.3
