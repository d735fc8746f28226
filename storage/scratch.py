"""Throw-away PostgreSQL databases for benchmarks: created, migrated, dropped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from storage.engine import make_engine
from storage.migrate import upgrade


@contextmanager
def scratch_database(admin_url: str, *, prefix: str = "agpt_scratch",
                     keep: bool = False) -> Iterator[str]:
    """A new, migrated database on the server of ``admin_url``, dropped on exit.

    Args:
        admin_url: URL of a database whose user may ``CREATE DATABASE``.
        prefix: Start of the database's name (a random suffix follows).
        keep: Leave the database in place on exit.

    Yields:
        The new database's URL (same server and credentials).
    """
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        if not keep:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def analyze(url: str) -> None:
    """Refresh the planner's statistics of every table (after a bulk load)."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
