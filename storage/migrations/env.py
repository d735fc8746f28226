"""Alembic environment: the URL comes from ``storage.migrate.make_config``, not an ini file."""

from __future__ import annotations

from alembic import context

from storage.engine import make_engine
from storage.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        msg = "no database URL: build the config with storage.migrate.make_config(url)"
        raise RuntimeError(msg)
    return str(url)


def run_migrations_offline() -> None:
    """Emit the migration SQL without a connection (``alembic upgrade --sql``)."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations against a live connection."""
    engine = make_engine(_url())
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                # Batch mode drops and recreates tables; with foreign keys enforced that would
                # cascade-delete referencing rows. The pragma is ignored inside a transaction,
                # so it goes to the driver before SQLAlchemy begins one.
                driver_connection = connection.connection.driver_connection
                if driver_connection is None:
                    msg = "the SQLite connection was closed before migrating"
                    raise RuntimeError(msg)
                driver_connection.execute("PRAGMA foreign_keys=OFF")
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
