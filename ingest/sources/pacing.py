"""Emit at a target rate: a schedule that neither drifts nor bursts after a stall."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class Pacer:
    """Waits until the next slot of a fixed-rate schedule.

    Slots are ``start + n / rate_hz`` (no drift from the time spent between waits). When the
    caller falls more than one interval behind (a slow send, a paused process), the schedule
    restarts from now instead of releasing a burst of catch-up frames.

    Args:
        rate_hz: Target rate in events per second; ``None`` or ``<= 0`` never waits.
        clock: Monotonic clock in seconds.
        sleep: Sleep function in seconds.
    """

    def __init__(self, rate_hz: float | None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / rate_hz if rate_hz and rate_hz > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None

    def wait(self) -> None:
        """Block until the next slot (the first call returns at once)."""
        if self.interval == 0.0:
            return
        now = self._clock()
        if self._next is None or now > self._next + self.interval:
            self._next = now
        elif now < self._next:
            self._sleep(self._next - now)
        self._next += self.interval


def paced(items: Iterable[T], rate_hz: float | None, *,
          clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> Iterator[T]:
    """Yield ``items`` no faster than ``rate_hz`` per second (``None``: as fast as they come)."""
    pacer = Pacer(rate_hz, clock=clock, sleep=sleep)
    for item in items:
        pacer.wait()
        yield item
