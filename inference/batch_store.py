"""Writing a batch of verdicts so that one bad row cannot stop the partition.

The batch is written in one transaction. When the database refuses it for a reason that lies
in the values (:func:`storage.write_errors.classify_write_error` says permanent), the batch is
split in halves and each half written on its own, down to single rows: the rows the database
refuses alone are returned as offenders (the worker dead-letters them), every other row is
stored. A connection-level failure is re-raised at any depth: the worker pauses and retries
the whole batch, which the idempotent writes make harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker

from ingest.envelope import FrameError
from storage.repositories import VerdictRecord, record_verdicts
from storage.write_errors import WriteFailure, classify_write_error

log = logging.getLogger(__name__)


class DatabaseRejectedError(FrameError):
    """The database refused one frame's row for a reason in its values (dead-lettered)."""

    def __init__(self, failure: WriteFailure) -> None:
        """Describe ``failure`` (SQLSTATE and driver error class) as a frame error."""
        state = f"SQLSTATE {failure.sqlstate}" if failure.sqlstate else "no SQLSTATE"
        msg = (f"the database refused the frame's row ({failure.error_class}, {state}): "
               f"{failure.message}")
        super().__init__(msg, reason="db_rejected")
        self.failure = failure


def store_batch(*, session_factory: sessionmaker[Session],
                rows: Sequence[VerdictRecord]) -> tuple[int, dict[int, WriteFailure]]:
    """Store ``rows``, isolating the ones the database refuses permanently.

    Args:
        session_factory: Sessions on the verdict database; one transaction per attempt.
        rows: The batch's frames and verdicts.

    Returns:
        ``(inserted, refused)``: how many verdicts were newly inserted, and the index in
        ``rows`` of every row refused on its own, with why.

    Raises:
        Exception: The first transient (connection-level or deployment) failure, unchanged.
    """
    inserted = 0
    refused: dict[int, WriteFailure] = {}
    pending: list[tuple[int, int]] = [(0, len(rows))] if rows else []
    while pending:
        start, stop = pending.pop()
        try:
            with session_factory.begin() as session:
                inserted += record_verdicts(session=session, records=rows[start:stop])
        except Exception as exc:
            failure = classify_write_error(exc)
            if not failure.permanent:
                raise
            if stop - start == 1:
                log.warning("database refused frame %r/%r: %s %s", rows[start].camera_id,
                            rows[start].frame_id, failure.error_class, failure.message)
                refused[start] = failure
                continue
            middle = (start + stop) // 2
            pending += [(middle, stop), (start, middle)]
    return inserted, refused
