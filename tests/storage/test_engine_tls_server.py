"""PostgreSQL over TLS with a password from a file, end to end through the AGPT_* settings.

A throw-away PostgreSQL cluster (this machine's binaries, run as the ``postgres`` user) with
``ssl = on``, a certificate signed by a CA made for the test, and pg_hba accepting only
``hostssl`` with scram-sha-256: a connection succeeds only if the TLS settings and the password
file both reach libpq.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from agpt.connections import database_url
from agpt.settings import Settings
from storage.engine import make_engine

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
PASSWORD = "tls-test-Pässword:/@"


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca: Path
    other_ca: Path
    password_file: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=folder)


def _as_postgres(*command: str) -> None:
    result = subprocess.run(["runuser", "-u", "postgres", "--", *command], check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsServer]:
    if PG_BIN is None or os.geteuid() != 0 or shutil.which("openssl") is None:
        pytest.skip("needs PostgreSQL binaries, openssl and root (to run as user postgres)")
    # Not under pytest's tmp folder: user postgres must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="agpt-pg-tls-"))
    root.chmod(0o755)
    try:
        yield from _serve(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _serve(root: Path) -> Iterator[TlsServer]:
    certs = root / "certs"
    certs.mkdir()
    _make_ca(certs, "ca")
    _make_ca(certs, "other-ca")
    (certs / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout",
             "server.key", "-out", "server.csr", cwd=certs)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
             cwd=certs)
    data = root / "data"
    secret = root / "password"
    secret.write_text(PASSWORD + "\n")
    shutil.chown(root, "postgres")
    for path in (certs / "server.key", certs / "server.crt", secret):
        shutil.chown(path, "postgres")
    (certs / "server.key").chmod(0o600)
    shutil.chown(certs, "postgres")
    _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--no-sync",
                 "-A", "trust", f"--pwfile={secret}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                   f"unix_socket_directories = '{root}'\nssl = on\n"
                   f"ssl_cert_file = '{certs / 'server.crt'}'\n"
                   f"ssl_key_file = '{certs / 'server.key'}'\n"
                   "password_encryption = 'scram-sha-256'\nfsync = off\n")
    (data / "pg_hba.conf").write_text("local all all trust\n"
                                      "hostssl all all 127.0.0.1/32 scram-sha-256\n"
                                      "host all all 127.0.0.1/32 reject\n")
    _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w",
                 "-t", "60", "start")
    try:
        yield TlsServer(port=port, ca=certs / "ca.crt", other_ca=certs / "other-ca.crt",
                        password_file=secret)
    finally:
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")


def _settings(server: TlsServer, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"postgresql+psycopg://postgres@localhost:{server.port}/postgres",
        "database_password_file": server.password_file, "database_sslmode": "verify-full",
        "database_sslrootcert": server.ca}
    values.update(overrides)
    return Settings(**values)


def _ssl_in_use(settings: Settings) -> bool:
    engine = make_engine(database_url(settings))
    try:
        with engine.connect() as connection:
            return bool(connection.execute(text(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar())
    finally:
        engine.dispose()


def test_verified_tls_and_the_password_file_connect(tls_server: TlsServer) -> None:
    assert _ssl_in_use(_settings(tls_server)) is True


def test_a_certificate_from_another_ca_is_refused(tls_server: TlsServer) -> None:
    with pytest.raises(OperationalError, match="certificate verify failed"):
        _ssl_in_use(_settings(tls_server, database_sslrootcert=tls_server.other_ca))


def test_without_tls_the_server_refuses(tls_server: TlsServer) -> None:
    with pytest.raises(OperationalError, match="rejects connection|no encryption|SSL off"):
        _ssl_in_use(_settings(tls_server, database_sslmode="disable",
                              database_sslrootcert=None))


def test_without_the_password_file_authentication_fails(tls_server: TlsServer) -> None:
    with pytest.raises(OperationalError, match="password"):
        _ssl_in_use(_settings(tls_server, database_password_file=None))
