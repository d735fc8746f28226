"""Engines and session factories, built by the composition root (never at import)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

# The embedded default: one SQLite file beside the working directory, migrated on first use.
DEFAULT_DATABASE_URL = "sqlite:///var/agpt.sqlite"


def make_engine(url: str) -> Engine:
    """Create an engine tuned for the backend named by ``url``.

    SQLite: the database file's parent directory is created, connections may cross threads
    (Streamlit, the worker's pool thread), every connection turns on WAL journaling (readers
    do not block the writer) and foreign-key enforcement, and transactions are begun by
    SQLAlchemy (so reads and DDL are transactional too). PostgreSQL: connections are
    pre-pinged so a restarted server costs one retry, not a failed request.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///var/agpt.sqlite`` or
            ``postgresql+psycopg://user@host/db``.

    Returns:
        A new engine; the caller disposes of it.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _make_sqlite_engine(parsed)
    return create_engine(parsed, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return a session factory bound to ``engine``.

    Objects stay readable after commit (``expire_on_commit=False``) so views built from them
    outlive the transaction.
    """
    return sessionmaker(bind=engine, expire_on_commit=False)


def _make_sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if not in_memory:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, start transactions (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # pysqlite would only BEGIN before DML; an explicit BEGIN makes reads consistent,
        # DDL (migrations) transactional and SAVEPOINTs work.
        connection.exec_driver_sql("BEGIN")

    return engine


SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def with_connection_options(url: str, *, password: str | None = None,
                            sslmode: str | None = None, sslrootcert: str | None = None,
                            sslcert: str | None = None, sslkey: str | None = None) -> str:
    """``url`` with a password and PostgreSQL TLS parameters set.

    The TLS parameters become libpq query parameters, so every engine built from the URL
    (the worker's, Alembic's, the dashboard's) connects the same way.

    Args:
        url: SQLAlchemy URL.
        password: Replaces the URL's password (read from a secret file by the caller).
        sslmode: libpq ``sslmode`` (one of :data:`SSL_MODES`).
        sslrootcert: CA bundle path.
        sslcert: Client certificate path.
        sslkey: Client key path.

    Returns:
        The URL as a string, password included (never log it).

    Raises:
        ValueError: an unknown ``sslmode``, or TLS options for a non-PostgreSQL URL.
    """
    parsed = make_url(url)
    if password is not None:
        parsed = parsed.set(password=password)
    tls = {key: value for key, value in {"sslmode": sslmode, "sslrootcert": sslrootcert,
                                         "sslcert": sslcert, "sslkey": sslkey}.items()
           if value is not None}
    if tls:
        if parsed.get_backend_name() != "postgresql":
            msg = f"TLS options apply to PostgreSQL only, not {parsed.get_backend_name()}"
            raise ValueError(msg)
        if sslmode is not None and sslmode not in SSL_MODES:
            msg = f"sslmode {sslmode!r}: use one of {', '.join(SSL_MODES)}"
            raise ValueError(msg)
        parsed = parsed.update_query_dict(tls)
    return parsed.render_as_string(hide_password=False)
