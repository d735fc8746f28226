"""Alembic, driven from code: no ``alembic.ini`` and no dependence on the working directory."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def make_config(url: str) -> Config:
    """Build the Alembic configuration for the database at ``url``.

    The URL travels in ``Config.attributes`` rather than the ini options, so ``%`` in an
    escaped password needs no ConfigParser quoting.

    Args:
        url: SQLAlchemy URL of the target database.

    Returns:
        A config usable with any ``alembic.command`` function.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (idempotent at head).

    Args:
        url: SQLAlchemy URL of the target database.
        revision: Alembic revision to reach; ``"head"`` is the newest.
    """
    command.upgrade(make_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"`` drops everything).

    Args:
        url: SQLAlchemy URL of the target database.
        revision: Alembic revision to reach.
    """
    command.downgrade(make_config(url), revision)


def head_revision() -> str:
    """Return the newest revision id shipped with this package."""
    head = ScriptDirectory.from_config(make_config("sqlite://")).get_current_head()
    if head is None:
        msg = f"no Alembic revisions found under {MIGRATIONS_DIR}"
        raise RuntimeError(msg)
    return head
