"""Alembic, driven from code: no ``alembic.ini`` and no dependence on the working directory.

Migrating is a pre-start step (``agpt db upgrade``, the compose ``migrate`` service): the
long-running processes only check the revision (:func:`require_current`) and refuse to start
on an older schema, so two workers never race each other through a migration.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from storage.engine import make_engine
from storage.errors import DatabaseUnreachableError, SchemaNotCurrentError

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

    Raises:
        DatabaseUnreachableError: The server cannot be reached or refused the connection.
    """
    try:
        command.upgrade(make_config(url), revision)
    except OperationalError as exc:
        raise _unreachable(url, exc) from exc


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


def current_revision(url: str) -> str | None:
    """Return the schema revision of the database at ``url`` (None: never migrated).

    Raises:
        DatabaseUnreachableError: The server cannot be reached or refused the connection.
    """
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except OperationalError as exc:
        raise _unreachable(url, exc) from exc
    finally:
        engine.dispose()


def require_current(url: str) -> None:
    """Check that the database at ``url`` is at the newest revision, without migrating.

    Raises:
        SchemaNotCurrentError: naming both revisions and ``agpt db upgrade``.
        DatabaseUnreachableError: The server cannot be reached.
    """
    current, head = current_revision(url), head_revision()
    if current != head:
        where = make_url(url).render_as_string(hide_password=True)
        state = f"at schema revision {current}" if current else "not migrated"
        msg = (f"the database at {where} is {state}, this agpt needs revision {head}: "
               f"run `agpt db upgrade` first")
        raise SchemaNotCurrentError(msg)


def _unreachable(url: str, exc: OperationalError) -> DatabaseUnreachableError:
    where = make_url(url).render_as_string(hide_password=True)
    reason = (str(exc.orig).strip().splitlines() or ["connection failed"])[0]
    return DatabaseUnreachableError(f"cannot reach the database at {where}: {reason}")
