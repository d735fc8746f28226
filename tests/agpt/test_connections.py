"""Connection settings read their secrets from mounted files; mistakes exit 2 with one line."""

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from agpt.connections import database_url, kafka_security
from agpt.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[2]


def test_database_password_and_tls_come_from_settings_and_files(tmp_path):
    secret = tmp_path / "postgres_password"
    secret.write_text("from-the-file\n")
    settings = Settings(database_url="postgresql+psycopg://agpt:in-the-url@db/agpt",
                        database_password_file=secret, database_sslmode="verify-full",
                        database_sslrootcert=tmp_path / "ca.crt")
    url = make_url(database_url(settings))
    assert url.password == "from-the-file"
    assert url.query["sslmode"] == "verify-full"
    assert url.query["sslrootcert"] == str(tmp_path / "ca.crt")


def test_kafka_sasl_password_comes_from_its_file(tmp_path):
    secret = tmp_path / "kafka_password"
    secret.write_text("pw")
    security = kafka_security(Settings(
        kafka_security_protocol="sasl_ssl", kafka_sasl_mechanism="scram-sha-256",
        kafka_sasl_username="agpt", kafka_sasl_password_file=secret))
    assert security.client_settings()["sasl_plain_password"] == "pw"
    assert security.client_settings()["sasl_mechanism"] == "SCRAM-SHA-256"


@pytest.mark.parametrize("content", [None, ""])
def test_a_missing_or_empty_secret_file_names_the_setting(tmp_path, content):
    secret = tmp_path / "nope"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(SettingsError, match="AGPT_DATABASE_PASSWORD_FILE"):
        database_url(Settings(database_url="postgresql+psycopg://a@b/c",
                              database_password_file=secret))


def test_cli_reports_a_bad_security_setting_in_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
           "AGPT_DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite",
           "AGPT_DATABASE_SSLMODE": "require"}
    result = subprocess.run([sys.executable, "-m", "agpt.cli", "db", "upgrade"], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "PostgreSQL" in result.stderr
