"""Latency-aware batch sizing: as large as pays, as small as the latency SLO needs.

A batch of ``n`` frames costs about ``fixed + n * per_frame`` seconds (decode, model,
database transaction, publish, commit), and every frame of it is decided when the batch
ends. :class:`BatchSizer` learns both terms from the batches the worker runs (exponentially
weighted least squares, so it follows the machine's load) and sizes the next batch from what
is waiting and how old the oldest waiting frame is:

* the oldest frame still has ``slo - age`` seconds: take everything waiting if the batch fits
  in that budget, else the largest batch that does;
* when even one frame cannot make it (the worker is behind), grow the batch only as far as
  it pays: up to where one more frame costs within a few percent of the per-frame throughput
  the next smaller batch reaches — the backlog drains fastest without lengthening every
  batch for nothing. Until batches of different sizes have been seen (so that the fixed
  cost is known), a worker that is behind takes everything waiting, which measures it.

Before anything is measured the sizer takes what is waiting (up to the maximum), which is the
fixed-batch behaviour it replaces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# How much cheaper per frame a larger batch must be to be worth the extra latency it adds.
GAIN_THRESHOLD = 0.05


@dataclass
class _Moments:
    """Exponentially weighted sums over (batch size n, seconds t)."""

    weight: float = 0.0
    n: float = 0.0
    t: float = 0.0
    nn: float = 0.0
    nt: float = 0.0

    def add(self, n: float, t: float, decay: float) -> None:
        self.weight = self.weight * decay + 1.0
        self.n = self.n * decay + n
        self.t = self.t * decay + t
        self.nn = self.nn * decay + n * n
        self.nt = self.nt * decay + n * t


class BatchSizer:
    """Chooses each batch size from the waiting frames and the measured cost model.

    Args:
        slo_s: Capture→verdict target in seconds.
        max_batch: Upper bound (the worker's ``batch_size``).
        half_life_batches: How many batches it takes for an observation's weight to halve.
        margin: Fraction of the SLO kept in reserve (transport, clock skew, jitter).
    """

    def __init__(self, *, slo_s: float, max_batch: int, half_life_batches: float = 20.0,
                 margin: float = 0.15) -> None:
        if slo_s <= 0 or max_batch < 1:
            msg = f"need slo_s > 0 and max_batch >= 1, got {slo_s}, {max_batch}"
            raise ValueError(msg)
        self.slo_s = slo_s
        self.max_batch = max_batch
        self.margin = margin
        self._decay = 0.5 ** (1.0 / half_life_batches)
        self._moments = _Moments()

    # -- cost model -------------------------------------------------------------------------
    def observe(self, size: int, seconds: float) -> None:
        """Record that a batch of ``size`` frames took ``seconds`` end to end."""
        if size >= 1 and seconds >= 0 and math.isfinite(seconds):
            self._moments.add(float(size), seconds, self._decay)

    @property
    def measured(self) -> bool:
        """Whether at least one batch has been observed."""
        return self._moments.weight > 0

    @property
    def split_known(self) -> bool:
        """Whether batches of different sizes were seen (fixed and per-frame cost separable)."""
        m = self._moments
        if m.weight <= 0:
            return False
        return m.nn / m.weight - (m.n / m.weight) ** 2 > 0.25

    def coefficients(self) -> tuple[float, float]:
        """``(fixed_s, per_frame_s)`` of the cost model, both >= 0.

        With one batch size seen so far the split is unknown and the whole cost is taken as
        per-frame (so batching does not look like it pays until it has been seen to pay).
        """
        m = self._moments
        if m.weight <= 0:
            return 0.0, 0.0
        mean_n, mean_t = m.n / m.weight, m.t / m.weight
        var_n = m.nn / m.weight - mean_n * mean_n
        if var_n > 1e-6:
            per_frame = max(0.0, (m.nt / m.weight - mean_n * mean_t) / var_n)
            fixed = max(0.0, mean_t - per_frame * mean_n)
            if per_frame > 0:
                return fixed, per_frame
        return 0.0, mean_t / max(mean_n, 1.0)

    def cost_s(self, size: int) -> float:
        """Predicted seconds for a batch of ``size`` frames."""
        fixed, per_frame = self.coefficients()
        return fixed + per_frame * size

    # -- decision ---------------------------------------------------------------------------
    def choose(self, *, waiting: int, oldest_age_s: float) -> int:
        """How many of the ``waiting`` frames (oldest first) to take into the next batch.

        Args:
            waiting: Frames ready to process (polled and not yet polled), >= 1.
            oldest_age_s: Age of the oldest of them (now - capture time).

        Returns:
            A size between 1 and ``min(waiting, max_batch)``.
        """
        available = max(1, min(waiting, self.max_batch))
        if not self.measured:
            return available
        budget = self.slo_s * (1.0 - self.margin) - max(0.0, oldest_age_s)
        fits = self._largest_within(budget, available)
        if fits >= available:
            return available  # everything waiting makes the SLO in one batch
        if fits >= 1:
            return fits  # the oldest make it; the rest go next, still young
        if not self.split_known:
            # Behind, and whether batching pays was never measured: take what is waiting
            # (the batch it replaces), which also measures it.
            return available
        return self._most_efficient(available)  # behind: drain, growing only while it pays

    def _largest_within(self, budget_s: float, limit: int) -> int:
        fixed, per_frame = self.coefficients()
        if budget_s < fixed + per_frame:
            return 0
        if per_frame <= 0:
            return limit
        return min(limit, int((budget_s - fixed) / per_frame))

    def _most_efficient(self, limit: int) -> int:
        best = 1
        for size in range(2, limit + 1):
            # Seconds per frame at this size against the best so far: grow only on a real gain.
            if self.cost_s(size) / size < (1.0 - GAIN_THRESHOLD) * self.cost_s(best) / best:
                best = size
        return best
