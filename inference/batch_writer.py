"""One batch written on a thread of its own while the worker prepares the next.

The worker's cycle is poll → decode → model → database → broker → commit. The last three
wait on other processes (a PostgreSQL commit, the broker's acknowledgements): 10-15 ms a
batch on this machine, ~10 % of a batch of one. :class:`BatchWriter` runs that write on a
background thread while the polling thread runs the model on the next batch, so at a steady
paced load the model runs back to back instead of every ~115 ms.

At most one batch is being written at a time, and the polling thread waits for it
(:meth:`BatchWriter.result`) before handing over the next: writes stay in order, and the
offsets of a batch are committed (by the polling thread; Kafka clients are not thread-safe)
only once its write has returned, i.e. its rows are committed in the database and its
verdicts and dead letters acknowledged. A crash (kill -9) between the write and the commit
redelivers the batch, and the idempotent writes drop the duplicates, as before.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

_B = TypeVar("_B")
_O = TypeVar("_O")


class BatchWriter(Generic[_B, _O]):
    """A single background thread that runs one batch's write at a time.

    Use as a context manager; the thread is a daemon so that a worker failing with a write
    still in an outage's retry loop can exit.
    """

    def __init__(self) -> None:
        """Start the thread."""
        self._jobs: queue.SimpleQueue[tuple[Callable[[], _O | None]] | None] = (
            queue.SimpleQueue())
        self._done: queue.SimpleQueue[tuple[_O | None, BaseException | None]] = (
            queue.SimpleQueue())
        self._in_flight: _B | None = None
        self._thread = threading.Thread(target=self._loop, name="batch-writer", daemon=True)
        self._thread.start()

    def __enter__(self) -> BatchWriter[_B, _O]:
        """The writer itself."""
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        """Stop the thread: after the write in hand, or at once when leaving on an error."""
        self._jobs.put(None)
        if kind is None:
            self._thread.join()

    @property
    def idle(self) -> bool:
        """Whether no batch is handed over and unfinished."""
        return self._in_flight is None

    def submit(self, batch: _B, write: Callable[[], _O | None]) -> None:
        """Hand over ``batch``: ``write()`` runs on the thread.

        Args:
            batch: What is written (returned by :meth:`result`).
            write: The write; returns its outcome, or None when it gave up (stop during an
                outage: nothing may be committed).

        Raises:
            RuntimeError: A batch is still in flight (call :meth:`result` first).
        """
        if self._in_flight is not None:
            msg = "a batch is still being written"
            raise RuntimeError(msg)
        self._in_flight = batch
        self._jobs.put((write,))

    def result(self) -> tuple[_B, _O | None] | None:
        """Wait for the batch in flight; None when there is none.

        Returns:
            ``(batch, outcome)``: the batch and what its ``write`` returned.

        Raises:
            BaseException: Whatever ``write`` raised, unchanged.
        """
        if self._in_flight is None:
            return None
        batch = self._in_flight
        outcome, error = self._done.get()
        self._in_flight = None
        if error is not None:
            raise error
        return batch, outcome

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            (write,) = job
            try:
                outcome = write()
            except BaseException as exc:  # re-raised on the polling thread by result()
                self._done.put((None, exc))
            else:
                self._done.put((outcome, None))
