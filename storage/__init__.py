"""Persistence of frames, verdicts, the few-shot pool and the review trail.

The most downstream package: it imports nothing else of this repository. ``engine`` builds
engines and sessions, ``migrate`` runs Alembic, ``repositories`` holds the keyword-only
functions the services call (they never commit; the caller owns the transaction).
"""
