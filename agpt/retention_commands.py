"""`agpt retention run`: compose settings, database and blob store; print the report."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

from agpt import wiring
from agpt.errors import UsageError
from agpt.retention import run_retention
from agpt.settings import Settings
from ingest.blobstore import BlobUnavailableError, BlobUriError

log = logging.getLogger("agpt.retention")


def run_retention_command(settings: Settings, args: argparse.Namespace) -> int:
    """Apply the retention policies once (or, ``--dry-run``, count what is due).

    Returns:
        0 when done; 1 when the blob store went away mid-run (nothing of the batch in hand
        was deleted; the next run continues).

    Raises:
        UsageError: a batch size below 1.
    """
    if args.batch_size is not None and args.batch_size < 1:
        msg = "--batch-size must be at least 1"
        raise UsageError(msg)
    wiring.configure_logging()
    store = wiring.blob_store(settings)
    assert store is not None  # wiring's default is the local directory

    def delete_blob(uri: str) -> None:
        try:
            store.delete(uri)
        except BlobUriError as exc:  # another store's object: not ours to delete
            log.warning("not deleted: %s", exc)

    try:
        report = run_retention(
            session_factory=wiring.database(settings), delete_blob=delete_blob,
            default=settings.retention_default, products=settings.retention_products,
            batch_size=args.batch_size or settings.retention_batch_size, dry_run=args.dry_run)
    except BlobUnavailableError as exc:
        log.error("the blob store is unavailable (%s); the batch in hand was rolled back, "
                  "run again later", exc)
        return 1
    print(json.dumps(dataclasses.asdict(report), indent=2))
    return 0
