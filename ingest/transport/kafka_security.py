"""TLS and SASL settings of the Kafka clients (kafka-python configuration names).

Built by the composition root from ``AGPT_KAFKA_*`` settings (secrets read from mounted files
there) and carried by :class:`ingest.transport.kafka.KafkaConfig` into every producer,
consumer and admin client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSecurityError(ValueError):
    """An inconsistent security setting (the message names the setting to fix)."""


@dataclass(frozen=True)
class KafkaSecurity:
    """How the clients authenticate to and encrypt traffic with the brokers.

    Attributes:
        protocol: ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
        sasl_mechanism: ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512`` (SASL protocols).
        sasl_username: SASL user.
        sasl_password: SASL password (the composition root reads it from a secret file).
        ssl_cafile: PEM bundle of the CAs that sign the brokers' certificates.
        ssl_certfile: Client certificate (PEM) for mutual TLS.
        ssl_keyfile: Private key of ``ssl_certfile``.
        ssl_check_hostname: Verify that the broker's certificate names the host.
    """

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            msg = f"AGPT_KAFKA_SECURITY_PROTOCOL={self.protocol!r}: use one of {PROTOCOLS}"
            raise KafkaSecurityError(msg)
        if self.protocol.startswith("SASL_"):
            if self.sasl_mechanism not in SASL_MECHANISMS:
                msg = (f"AGPT_KAFKA_SASL_MECHANISM={self.sasl_mechanism!r}: {self.protocol} "
                       f"needs one of {SASL_MECHANISMS}")
                raise KafkaSecurityError(msg)
            if not self.sasl_username or not self.sasl_password:
                msg = (f"{self.protocol} needs AGPT_KAFKA_SASL_USERNAME and "
                       "AGPT_KAFKA_SASL_PASSWORD_FILE (a file holding the password)")
                raise KafkaSecurityError(msg)
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            msg = "AGPT_KAFKA_SSL_CERTFILE and AGPT_KAFKA_SSL_KEYFILE go together (mutual TLS)"
            raise KafkaSecurityError(msg)

    def __repr__(self) -> str:
        # The password never reaches a log line.
        shown = "***" if self.sasl_password else None
        return (f"KafkaSecurity(protocol={self.protocol!r}, sasl_mechanism="
                f"{self.sasl_mechanism!r}, sasl_username={self.sasl_username!r}, "
                f"sasl_password={shown!r}, ssl_cafile={self.ssl_cafile!r})")

    def client_settings(self) -> dict[str, Any]:
        """kafka-python keyword arguments (only those that apply to the protocol)."""
        settings: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol in ("SSL", "SASL_SSL"):
            settings["ssl_check_hostname"] = self.ssl_check_hostname
            for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if getattr(self, key) is not None:
                    settings[key] = getattr(self, key)
        if self.protocol.startswith("SASL_"):
            # kafka-python takes these two for PLAIN and for SCRAM alike.
            settings["sasl_mechanism"] = self.sasl_mechanism
            settings["sasl_plain_username"] = self.sasl_username
            settings["sasl_plain_password"] = self.sasl_password
        return settings
