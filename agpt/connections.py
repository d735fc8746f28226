"""Connection settings with their secrets: the database URL and the Kafka client config.

Secrets are read here, from the files named by ``AGPT_*_FILE`` settings (mounted Kubernetes
or compose secrets), once per process. No torch import: `agpt db upgrade` runs in the slim
image.
"""

from __future__ import annotations

from pathlib import Path

from agpt.settings import Settings, SettingsError
from ingest.transport.kafka_security import KafkaSecurity, KafkaSecurityError
from storage.engine import with_connection_options


def read_secret(path: Path, setting: str) -> str:
    """The content of a secret file, without the trailing newline.

    Raises:
        SettingsError: the file cannot be read or is empty (names the setting).
    """
    try:
        value = path.read_text().rstrip("\r\n")
    except OSError as exc:
        msg = f"{setting}={path}: cannot read the secret file ({exc.strerror})"
        raise SettingsError(msg) from exc
    if not value:
        msg = f"{setting}={path}: the secret file is empty"
        raise SettingsError(msg)
    return value


def _path(value: Path | None) -> str | None:
    return None if value is None else str(value)


def database_url(settings: Settings) -> str:
    """``AGPT_DATABASE_URL`` with the password file and the TLS settings applied.

    Raises:
        SettingsError: an unreadable password file or an invalid TLS setting.
    """
    password = (read_secret(settings.database_password_file, "AGPT_DATABASE_PASSWORD_FILE")
                if settings.database_password_file else None)
    try:
        return with_connection_options(
            settings.database_url, password=password, sslmode=settings.database_sslmode,
            sslrootcert=_path(settings.database_sslrootcert),
            sslcert=_path(settings.database_sslcert), sslkey=_path(settings.database_sslkey))
    except ValueError as exc:
        msg = f"AGPT_DATABASE_*: {exc}"
        raise SettingsError(msg) from exc


def kafka_security(settings: Settings) -> KafkaSecurity:
    """TLS / SASL of the Kafka clients from ``AGPT_KAFKA_*``.

    Raises:
        SettingsError: an unreadable password file or an inconsistent combination.
    """
    password = (read_secret(settings.kafka_sasl_password_file,
                            "AGPT_KAFKA_SASL_PASSWORD_FILE")
                if settings.kafka_sasl_password_file else None)
    try:
        return KafkaSecurity(
            protocol=settings.kafka_security_protocol.upper(),
            sasl_mechanism=(settings.kafka_sasl_mechanism.upper()
                            if settings.kafka_sasl_mechanism else None),
            sasl_username=settings.kafka_sasl_username, sasl_password=password,
            ssl_cafile=_path(settings.kafka_ssl_cafile),
            ssl_certfile=_path(settings.kafka_ssl_certfile),
            ssl_keyfile=_path(settings.kafka_ssl_keyfile),
            ssl_check_hostname=settings.kafka_ssl_check_hostname)
    except KafkaSecurityError as exc:
        raise SettingsError(str(exc)) from exc
