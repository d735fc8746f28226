"""Kafka TLS/SASL settings: validation, kafka-python names, no password in logs."""

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from ingest.transport.kafka import KafkaConfig
from ingest.transport.kafka_security import KafkaSecurity, KafkaSecurityError


def scram():
    return KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                         sasl_username="agpt-worker", sasl_password="s3cret",
                         ssl_cafile="/run/secrets/kafka-ca.crt")


def test_plaintext_is_the_default_and_adds_nothing_else():
    assert KafkaSecurity().client_settings() == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_with_scram_maps_to_kafka_python_settings():
    assert scram().client_settings() == {
        "security_protocol": "SASL_SSL", "ssl_check_hostname": True,
        "ssl_cafile": "/run/secrets/kafka-ca.crt", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "agpt-worker", "sasl_plain_password": "s3cret"}


@pytest.mark.parametrize("security", [
    KafkaSecurity(),
    KafkaSecurity(protocol="SSL", ssl_cafile="ca", ssl_certfile="c", ssl_keyfile="k"),
    KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u",
                  sasl_password="p"),
    scram(),
], ids=["plaintext", "mtls", "sasl-plain", "sasl-scram"])
def test_every_key_is_a_kafka_python_setting_of_every_client(security):
    settings = KafkaConfig(bootstrap="b:9092", security=security).client_settings()
    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        assert set(settings) <= set(client.DEFAULT_CONFIG), client.__name__


@pytest.mark.parametrize(("kwargs", "names"), [
    ({"protocol": "TLS"}, "AGPT_KAFKA_SECURITY_PROTOCOL"),
    ({"protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u",
      "sasl_password": "p"}, "AGPT_KAFKA_SASL_MECHANISM"),
    ({"protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
     "AGPT_KAFKA_SASL_PASSWORD_FILE"),
    ({"protocol": "SSL", "ssl_certfile": "c"}, "AGPT_KAFKA_SSL_KEYFILE"),
])
def test_inconsistent_settings_name_what_to_fix(kwargs, names):
    with pytest.raises(KafkaSecurityError, match=names):
        KafkaSecurity(**kwargs)


def test_the_password_never_appears_in_a_repr():
    config = KafkaConfig(bootstrap="b:9092", security=scram())
    assert "s3cret" not in repr(config)
    assert "s3cret" not in str(config.security)
