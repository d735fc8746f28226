"""make_engine tunes each backend; sessions keep objects readable after commit."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from storage.engine import make_engine, make_session_factory
from storage.models import PoolEntry


def test_sqlite_file_gets_its_directory_wal_and_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "agpt.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            journal = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
            foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
    finally:
        engine.dispose()

    assert path.parent.is_dir()
    assert journal == "wal"
    assert foreign_keys == 1


def test_sqlite_in_memory_needs_no_directory() -> None:
    engine = make_engine("sqlite://")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_sqlite_connection_may_cross_threads(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'agpt.sqlite'}")
    errors: list[BaseException] = []
    try:
        with engine.connect() as connection:

            def _use() -> None:
                try:
                    connection.execute(text("SELECT 1"))
                except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                    errors.append(exc)

            thread = threading.Thread(target=_use)
            thread.start()
            thread.join(timeout=10)
    finally:
        engine.dispose()

    assert errors == []


def test_sqlite_transactions_are_real(tmp_path: Path) -> None:
    # DDL rolls back too, because SQLAlchemy (not pysqlite) issues BEGIN.
    engine = make_engine(f"sqlite:///{tmp_path / 'agpt.sqlite'}")
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("CREATE TABLE scratch (x INTEGER)")
            connection.rollback()
            tables = connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE name = 'scratch'"
            ).all()
    finally:
        engine.dispose()

    assert tables == []


@pytest.mark.postgres
def test_postgres_engine_pre_pings(postgres_database_url: str) -> None:
    engine = make_engine(postgres_database_url)
    try:
        assert engine.pool._pre_ping  # type: ignore[attr-defined]
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_objects_stay_readable_after_commit(database_engine: Engine) -> None:
    factory = make_session_factory(database_engine)
    with factory() as session:
        entry = PoolEntry(product="bottle", image=b"png", source="seed", added_by="test")
        session.add(entry)
        session.commit()

    assert entry.product == "bottle"
    assert entry.active is True
