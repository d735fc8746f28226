"""with_connection_options: password and PostgreSQL TLS parameters reach libpq."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from storage.engine import make_engine, with_connection_options


def test_password_and_tls_parameters_are_set_in_the_url() -> None:
    url = with_connection_options(
        "postgresql+psycopg://agpt@db:5432/agpt", password="p@ss/word:1",
        sslmode="verify-full", sslrootcert="/run/secrets/ca.crt",
        sslcert="/run/secrets/client.crt", sslkey="/run/secrets/client.key")
    parsed = make_url(url)
    assert parsed.password == "p@ss/word:1"  # escaped in the URL, intact after parsing
    assert dict(parsed.query) == {"sslmode": "verify-full", "sslrootcert": "/run/secrets/ca.crt",
                                  "sslcert": "/run/secrets/client.crt",
                                  "sslkey": "/run/secrets/client.key"}


def test_nothing_set_leaves_the_url_alone() -> None:
    assert with_connection_options("sqlite:///var/a.sqlite") == "sqlite:///var/a.sqlite"


@pytest.mark.parametrize(("url", "options"), [
    ("sqlite:///var/a.sqlite", {"sslmode": "require"}),
    ("postgresql+psycopg://a@b/c", {"sslmode": "required"}),
])
def test_wrong_tls_options_are_refused(url: str, options: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="sslmode|PostgreSQL"):
        with_connection_options(url, **options)


@pytest.mark.postgres
def test_sslmode_reaches_the_server_connection(postgres_database_url: str) -> None:
    # This machine's PostgreSQL runs without TLS: `disable` connects, `require` must be
    # refused by libpq, which shows the parameter is applied to the real connection.
    plain = make_engine(with_connection_options(postgres_database_url, sslmode="disable"))
    try:
        with plain.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        plain.dispose()
    strict = make_engine(with_connection_options(postgres_database_url, sslmode="require"))
    try:
        with pytest.raises(OperationalError, match="SSL"), strict.connect():
            pass
    finally:
        strict.dispose()
