"""Migrations build the schema from empty on both backends and match the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from storage.engine import make_engine
from storage.migrate import downgrade, head_revision, upgrade
from storage.models import Base

TABLES = {"frames", "verdicts", "pool_entries", "review_actions", "chat_messages",
          "pool_versions", "pool_changes", "users"}


def _state(url: str) -> tuple[set[str], str | None, list[object]]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection)
            tables = set(inspect(connection).get_table_names()) - {"alembic_version"}
            return tables, context.get_current_revision(), compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_from_empty_matches_the_models(
    empty_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may depend on the working directory

    upgrade(empty_database_url)

    tables, revision, differences = _state(empty_database_url)
    assert tables == TABLES
    assert revision == head_revision()
    assert differences == []


def test_upgrade_at_head_is_a_no_op(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    upgrade(empty_database_url)

    assert _state(empty_database_url)[1] == head_revision()


def test_downgrade_to_base_and_back(empty_database_url: str) -> None:
    upgrade(empty_database_url)

    downgrade(empty_database_url, "base")
    assert _state(empty_database_url)[:2] == (set(), None)

    upgrade(empty_database_url)
    assert _state(empty_database_url)[:2] == (TABLES, head_revision())


def test_head_is_the_line_scale_revision() -> None:
    assert head_revision() == "0002"
