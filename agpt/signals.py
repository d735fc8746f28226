"""Graceful stop of the long-running commands on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def stop_on_signals(log: logging.Logger, doing: str) -> Iterator[threading.Event]:
    """Yield an event that SIGTERM or SIGINT sets; the previous handlers return on exit.

    Args:
        log: Where the signal is reported.
        doing: What the command does on the signal, e.g. "flushing and stopping".

    Yields:
        The event the command's loop checks between units of work.
    """
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("%s: %s", signal.Signals(signum).name, doing)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
