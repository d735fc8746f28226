"""Alembic environment and revisions of the storage schema (run through ``storage.migrate``)."""
