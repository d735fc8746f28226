"""The TLS settings reach kafka-python's socket: a real TLS endpoint sees the handshake.

The endpoint is a plain TLS server (not a broker) with a certificate from a CA made for the
test. With that CA in ``ssl_cafile`` the client completes the handshake (then gives up, as no
Kafka protocol answers); with another CA it refuses the server's certificate.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.transport.base import TransportError
from ingest.transport.kafka import KafkaConfig, KafkaTransport
from ingest.transport.kafka_security import KafkaSecurity

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("kafka-tls")
    for name in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                 f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout",
             "server.key", "-out", "server.csr", cwd=folder)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
             cwd=folder)
    return folder


class TlsEndpoint:
    """Accepts connections, completes TLS handshakes, counts them, closes."""

    def __init__(self, certs: Path) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certs / "server.crt", certs / "server.key")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.handshakes = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(raw, server_side=True):
                    self.handshakes += 1
            except (ssl.SSLError, OSError):
                self.failures += 1

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def endpoint(certs: Path) -> Iterator[TlsEndpoint]:
    server = TlsEndpoint(certs)
    yield server
    server.close()


def _connect(endpoint: TlsEndpoint, cafile: Path) -> None:
    config = KafkaConfig(bootstrap=f"localhost:{endpoint.port}", bootstrap_timeout_ms=1500,
                         request_timeout_ms=1500,
                         security=KafkaSecurity(protocol="SSL", ssl_cafile=str(cafile)))
    with pytest.raises(TransportError):
        KafkaTransport(config).producer()


def test_the_client_speaks_tls_with_the_configured_ca(endpoint: TlsEndpoint,
                                                      certs: Path) -> None:
    _connect(endpoint, certs / "ca.crt")
    assert endpoint.handshakes >= 1


def test_a_server_certificate_from_another_ca_is_refused(endpoint: TlsEndpoint,
                                                         certs: Path) -> None:
    _connect(endpoint, certs / "other-ca.crt")
    assert endpoint.handshakes == 0
    assert endpoint.failures >= 1
