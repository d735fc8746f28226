"""`agpt retention run`: apply the per-product retention policies in bounded batches.

Each batch is one transaction: claim frames (``FOR UPDATE SKIP LOCKED``), delete the blobs
nobody else keeps (under a lock on each URI), forget the images or delete the rows, commit.
A blob is deleted before the rows that name it are committed: a crash in between leaves rows
pointing at a missing blob, which the next run finishes (deleting a missing blob is fine);
never an orphan blob no row names. Re-running deletes nothing more; two runs at once take
disjoint batches and delete each blob once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from agpt.settings import RetentionPolicy
from storage.retention import (
    ClaimedFrame,
    ProductScope,
    claim_expired_frames,
    claim_images,
    count_due,
    delete_frames,
    lock_uri,
    release_images,
    uri_referenced_elsewhere,
)

log = logging.getLogger(__name__)


__all__ = ["RetentionPolicy", "RetentionReport", "run_retention", "scopes"]


@dataclass
class RetentionReport:
    """What one run deleted (or, dry, would delete), per product scope."""

    dry_run: bool
    normal_images: int = 0
    flagged_images: int = 0
    frames: int = 0
    blobs_deleted: int = 0
    batches: int = 0
    per_scope: dict[str, dict[str, int]] = field(default_factory=dict)


def scopes(default: RetentionPolicy, products: dict[str, RetentionPolicy]
           ) -> list[tuple[str, ProductScope, RetentionPolicy]]:
    """The policy of each named product, then the default for every other product."""
    named = [(name, ProductScope(products=(name,)), policy)
             for name, policy in sorted(products.items())]
    return [*named, ("*", ProductScope(excluded=tuple(sorted(products))), default)]


def _cutoff(now: datetime, days: float | None) -> datetime | None:
    return None if days is None else now - timedelta(days=days)


def run_retention(*, session_factory: sessionmaker[Session], delete_blob: Callable[[str], None],
                  default: RetentionPolicy, products: dict[str, RetentionPolicy],
                  batch_size: int = 500, dry_run: bool = False,
                  now: datetime | None = None) -> RetentionReport:
    """Apply the policies until nothing more is due.

    Args:
        session_factory: Sessions on the database.
        delete_blob: Deletes one blob by URI (the blob store's ``delete``); must accept URIs
            that are already gone.
        default: Policy of products without their own.
        products: Per-product policies.
        batch_size: Frames per transaction.
        dry_run: Count what is due, change nothing.
        now: The reference time (tests); default the current time.

    Returns:
        The counts.
    """
    now = now or datetime.now(UTC)
    report = RetentionReport(dry_run=dry_run)
    for name, scope, policy in scopes(default, products):
        normal_before = _cutoff(now, policy.normal_image_days)
        flagged_before = _cutoff(now, policy.flagged_image_days)
        frames_before = _cutoff(now, policy.verdict_days)
        if dry_run:
            with session_factory() as session:
                due = count_due(session=session, scope=scope, normal_before=normal_before,
                                flagged_before=flagged_before, frames_before=frames_before)
            counts = {"normal_images": due.normal_images, "flagged_images": due.flagged_images,
                      "frames": due.frames}
        else:
            counts = {"normal_images": 0, "flagged_images": 0, "frames": 0, "blobs": 0}
            # Rows first: an expired frame's image goes with it, not in a separate pass.
            if frames_before is not None:
                while batch := _frames_batch(session_factory, delete_blob, scope,
                                             frames_before, batch_size, counts):
                    report.batches += 1
                    log.info("retention %s: deleted %d frames", name, batch)
            while batch := _images_batch(session_factory, delete_blob, scope, normal_before,
                                         flagged_before, batch_size, counts):
                report.batches += 1
                log.info("retention %s: released %d images", name, batch)
            report.blobs_deleted += counts.pop("blobs")
        report.per_scope[name] = counts
        report.normal_images += counts["normal_images"]
        report.flagged_images += counts["flagged_images"]
        report.frames += counts["frames"]
    return report


def _images_batch(session_factory: sessionmaker[Session], delete_blob: Callable[[str], None],
                  scope: ProductScope, normal_before: datetime | None,
                  flagged_before: datetime | None, limit: int, counts: dict[str, int]) -> int:
    with session_factory.begin() as session:
        claimed = claim_images(session=session, scope=scope, normal_before=normal_before,
                               flagged_before=flagged_before, limit=limit)
        counts["blobs"] += _delete_unshared_blobs(session, claimed, delete_blob)
        release_images(session=session, frame_pks=[c.frame_pk for c in claimed])
    for frame in claimed:
        counts["flagged_images" if frame.anomalous else "normal_images"] += 1
    return len(claimed)


def _frames_batch(session_factory: sessionmaker[Session], delete_blob: Callable[[str], None],
                  scope: ProductScope, before: datetime, limit: int,
                  counts: dict[str, int]) -> int:
    with session_factory.begin() as session:
        claimed = claim_expired_frames(session=session, scope=scope, before=before, limit=limit)
        counts["blobs"] += _delete_unshared_blobs(session, claimed, delete_blob)
        delete_frames(session=session, frame_pks=[c.frame_pk for c in claimed])
    counts["frames"] += len(claimed)
    return len(claimed)


def _delete_unshared_blobs(session: Session, claimed: list[ClaimedFrame],
                           delete_blob: Callable[[str], None]) -> int:
    batch = [c.frame_pk for c in claimed]
    deleted = 0
    for uri in sorted({c.image_uri for c in claimed if c.image_uri is not None}):
        lock_uri(session=session, uri=uri)
        if uri_referenced_elsewhere(session=session, uri=uri, excluding=batch):
            continue  # the last frame to let go deletes it
        delete_blob(uri)
        deleted += 1
    return deleted
