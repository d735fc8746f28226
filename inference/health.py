"""Liveness, readiness and metrics over HTTP for a worker process.

``/healthz`` answers 200 while the process runs and its consume loop is not stuck (503 once
the loop has held work without advancing for longer than the :class:`Liveness` bound);
``/readyz`` answers 200 only while every registered readiness condition holds (503 with the
failing ones listed otherwise); ``/metrics`` is the Prometheus exposition of the injected
registry. The server binds ``127.0.0.1`` unless told otherwise (``AGPT_HEALTH_HOST``) and runs
in a daemon thread, created by :meth:`HealthServer.start` (never at import).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


class Readiness:
    """Named conditions that must all hold for the process to take traffic (thread-safe).

    Args:
        conditions: Names of the conditions, each initially not met.
    """

    def __init__(self, *conditions: str) -> None:
        self._lock = threading.Lock()
        self._state = dict.fromkeys(conditions, False)

    def set(self, name: str, ok: bool) -> None:
        """Record whether condition ``name`` holds (registering it if new)."""
        with self._lock:
            self._state[name] = ok

    def conditions(self) -> dict[str, bool]:
        """A snapshot of every condition and whether it holds."""
        with self._lock:
            return dict(self._state)

    def failing(self) -> list[str]:
        """Names of the conditions that do not hold, sorted."""
        with self._lock:
            return sorted(name for name, ok in self._state.items() if not ok)

    @property
    def ready(self) -> bool:
        """True when every condition holds."""
        return not self.failing()


class Liveness:
    """Whether the consume loop advances while it holds work (thread-safe).

    The loop calls :meth:`tick` whenever it advances (a poll returned, a retry wait ended, a
    batch was finished) and :meth:`holding` around a batch. It is stalled when it has held a
    batch for longer than ``bound_s`` without a tick: a blocked read, a hung model, a
    deadlock. Waiting for work, or backing off during a database outage, is not a stall.

    Args:
        bound_s: Longest a batch may be held without the loop advancing.
        clock: Monotonic seconds (injectable for tests).
    """

    def __init__(self, bound_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.bound_s = bound_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last = clock()
        self._holding = False

    def tick(self) -> None:
        """The loop advanced."""
        with self._lock:
            self._last = self._clock()

    def holding(self, held: bool) -> None:
        """The loop took (True) or finished (False) a batch; both count as a tick."""
        with self._lock:
            self._holding = held
            self._last = self._clock()

    def stalled_for(self) -> float | None:
        """Seconds without progress while holding work, once above the bound; else None."""
        with self._lock:
            idle = self._clock() - self._last
            return idle if self._holding and idle > self.bound_s else None


class HealthServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` on ``host:port`` in a daemon thread.

    Args:
        registry: The metrics registry exposed on ``/metrics``.
        readiness: The conditions ``/readyz`` reports.
        port: TCP port; 0 picks a free one (read it back from :attr:`port` after start).
        host: Interface to listen on (loopback by default; ``0.0.0.0`` in containers).
        liveness: The consume loop's progress; None: ``/healthz`` only says the process runs.
    """

    def __init__(self, *, registry: CollectorRegistry, readiness: Readiness, port: int,
                 host: str = "127.0.0.1", liveness: Liveness | None = None) -> None:
        self.registry = registry
        self.readiness = readiness
        self.liveness = liveness
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._server is None:
            msg = "the health server is not started"
            raise RuntimeError(msg)
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        """Bind and serve in a daemon thread; returns self."""
        server = ThreadingHTTPServer(self._address, _handler(self.registry, self.readiness,
                                                             self.liveness))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="health-server",
                                        daemon=True)
        self._thread.start()
        log.info("health server on %s:%d (/healthz /readyz /metrics)", self._address[0],
                 self.port)
        return self

    def stop(self) -> None:
        """Stop serving and release the port; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _handler(registry: CollectorRegistry, readiness: Readiness,
             liveness: Liveness | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                stalled = liveness.stalled_for() if liveness is not None else None
                if stalled is None:
                    self._reply(200, b"ok\n")
                else:
                    body = (f"stalled: the consume loop has held a batch for {stalled:.0f} s "
                            f"without progress (bound {liveness.bound_s:g} s)\n")
                    self._reply(503, body.encode())
            elif path == "/readyz":
                failing = readiness.failing()
                if failing:
                    self._reply(503, f"not ready: {', '.join(failing)}\n".encode())
                else:
                    self._reply(200, b"ready\n")
            elif path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            else:
                self._reply(404, b"not found\n")

        def _reply(self, status: int, body: bytes,
                   content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # Probes every few seconds would flood the log; errors still go to log_error.
            return

        def log_error(self, format: str, *args: object) -> None:
            log.warning("health server: " + format, *args)

    return Handler
