"""The database as a pre-start step: check the schema revision, migrate only where it is safe.

Long-running processes (workers, the dashboard) and the operator commands never run Alembic
on a shared database: two workers would race each other and the compose ``migrate`` service.
They check the revision and refuse with one line naming ``agpt db upgrade``. The embedded
default keeps working in two commands: ``agpt demo`` and any SQLite database (one process,
nothing to race) migrate themselves. Imports neither torch nor Kafka (the dashboard uses it).
"""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from agpt.connections import database_url
from agpt.settings import Settings
from storage.engine import make_engine, make_session_factory
from storage.migrate import require_current, upgrade


def migrates_itself(url: str) -> bool:
    """Whether a process may migrate the database at ``url`` on start (SQLite only)."""
    return make_url(url).get_backend_name() == "sqlite"


def prepare_database(settings: Settings, *, migrate: bool | None = None) -> None:
    """Make sure the database is at the newest schema revision before a process starts.

    Args:
        settings: Where the database is (``database_url``).
        migrate: Migrate to the newest revision; None (default) migrates SQLite only and
            checks any other database.

    Raises:
        SchemaNotCurrentError: The database is not at the newest revision (not migrated).
        DatabaseUnreachableError: The server cannot be reached.
    """
    url = database_url(settings)
    if migrate is None:
        migrate = migrates_itself(url)
    if migrate:
        upgrade(url)
    else:
        require_current(url)


def database(settings: Settings, *, migrate: bool | None = None) -> sessionmaker[Session]:
    """Engine + session factory on a database at the newest schema revision.

    Args:
        settings: Where the database is (``database_url``).
        migrate: As in :func:`prepare_database`.

    Raises:
        SchemaNotCurrentError: The database is not at the newest revision (not migrated).
        DatabaseUnreachableError: The server cannot be reached.
    """
    prepare_database(settings, migrate=migrate)
    return make_session_factory(make_engine(database_url(settings)))
