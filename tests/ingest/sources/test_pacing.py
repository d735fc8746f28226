import time

import pytest

from ingest.sources.pacing import Pacer, paced


class ManualClock:
    """A clock that moves only when slept on or advanced (time is the edge faked here)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_paced_keeps_the_rate_in_real_time():
    started = time.monotonic()
    out = list(paced(range(10), 50.0))
    elapsed = time.monotonic() - started
    assert out == list(range(10))
    assert elapsed >= 9 / 50 - 0.005  # nine intervals after the first item
    assert elapsed < 1.0


def test_unpaced_never_sleeps():
    clock = ManualClock()
    assert list(paced(range(5), None, clock=clock, sleep=clock.sleep)) == list(range(5))
    assert clock.sleeps == []


def test_schedule_does_not_drift_with_work_between_waits():
    clock = ManualClock()
    pacer = Pacer(10.0, clock=clock, sleep=clock.sleep)
    pacer.wait()
    for _ in range(5):
        clock.now += 0.03  # work done between two frames
        pacer.wait()
    assert clock.now == pytest.approx(100.5)  # slots at 0.1 s whatever the work took
    assert all(abs(s - 0.07) < 1e-9 for s in clock.sleeps)


def test_a_stall_restarts_the_schedule_instead_of_bursting():
    clock = ManualClock()
    pacer = Pacer(10.0, clock=clock, sleep=clock.sleep)
    pacer.wait()
    clock.now += 2.0  # stalled for 20 slots
    pacer.wait()
    pacer.wait()
    # The frame after the stall goes at once; the next one waits a full interval.
    assert clock.sleeps == [pytest.approx(0.1)]
