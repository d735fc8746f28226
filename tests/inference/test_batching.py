"""BatchSizer: learns fixed + per-frame cost, keeps the oldest frame within the SLO, grows
batches only when that pays."""

from __future__ import annotations

import pytest

from inference.batching import BatchSizer


def _trained(fixed: float, per_frame: float, sizes=(1, 2, 4, 8, 3, 6), **kwargs) -> BatchSizer:
    sizer = BatchSizer(slo_s=0.25, max_batch=8, margin=0.0, **kwargs)
    for _ in range(5):
        for size in sizes:
            sizer.observe(size, fixed + per_frame * size)
    return sizer


def test_learns_fixed_and_per_frame_cost() -> None:
    fixed, per_frame = _trained(0.030, 0.050).coefficients()

    assert fixed == pytest.approx(0.030, abs=1e-6)
    assert per_frame == pytest.approx(0.050, abs=1e-6)


def test_follows_a_change_in_cost() -> None:
    sizer = _trained(0.030, 0.050)
    for _ in range(20):  # the machine got twice as slow
        for size in (1, 4, 8):
            sizer.observe(size, 0.060 + 0.100 * size)

    assert sizer.coefficients()[1] == pytest.approx(0.100, rel=0.1)


def test_takes_all_waiting_before_anything_is_measured() -> None:
    assert BatchSizer(slo_s=0.25, max_batch=8).choose(waiting=5, oldest_age_s=0.0) == 5
    assert BatchSizer(slo_s=0.25, max_batch=8).choose(waiting=50, oldest_age_s=9.0) == 8


def test_takes_everything_that_fits_the_remaining_budget() -> None:
    sizer = _trained(0.030, 0.050)  # 1: 80 ms, 2: 130 ms, 3: 180 ms, 4: 230 ms

    assert sizer.choose(waiting=2, oldest_age_s=0.0) == 2  # all of it fits
    assert sizer.choose(waiting=8, oldest_age_s=0.0) == 4  # 4 frames finish at 230 ms
    assert sizer.choose(waiting=8, oldest_age_s=0.100) == 2  # 150 ms left: 2 frames
    assert sizer.choose(waiting=8, oldest_age_s=0.160) == 1


def test_behind_the_slo_grows_only_when_batching_pays() -> None:
    paying = _trained(0.100, 0.040)  # fixed cost dominates: bigger batches drain faster
    flat = _trained(0.0005, 0.060)  # no fixed cost: batching gains nothing

    assert paying.choose(waiting=20, oldest_age_s=1.0) > 4
    assert flat.choose(waiting=20, oldest_age_s=1.0) == 1


def test_one_batch_size_seen_counts_everything_as_per_frame() -> None:
    sizer = BatchSizer(slo_s=0.25, max_batch=8)
    for _ in range(3):
        sizer.observe(8, 0.480)

    assert sizer.coefficients() == pytest.approx((0.0, 0.060))
    assert sizer.choose(waiting=8, oldest_age_s=0.0) == 3  # 3 x 60 ms <= 212 ms


def test_behind_without_a_measured_split_takes_what_waits_to_measure_it() -> None:
    sizer = BatchSizer(slo_s=0.25, max_batch=8)
    for _ in range(10):
        sizer.observe(1, 0.130)  # only single frames so far: is batching worth it? unknown

    assert not sizer.split_known
    assert sizer.choose(waiting=20, oldest_age_s=1.0) == 8
    sizer.observe(8, 0.700)  # 87 ms a frame in a batch of 8: it pays
    assert sizer.split_known
    assert sizer.choose(waiting=20, oldest_age_s=1.0) > 4


def test_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="slo_s"):
        BatchSizer(slo_s=0, max_batch=8)
