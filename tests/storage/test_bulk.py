"""Bulk benchmark rows: flagged every n-th, blobs only on flagged ones, newest last."""

from __future__ import annotations

from sqlalchemy.orm import Session

from storage.bulk import insert_synthetic_verdicts
from storage.repositories import count_queue, count_verdicts, get_frame_detail, list_queue


def test_inserts_the_requested_rows(session: Session) -> None:
    inserted = insert_synthetic_verdicts(session=session, count=30, image_png=b"img",
                                         mask_png=b"mask", heatmap_png=b"heat",
                                         cameras=("c1", "c2"), flagged_every=10)
    session.commit()

    assert inserted == 30 == count_verdicts(session=session)
    assert count_queue(session=session) == 3
    newest = list_queue(session=session, limit=1)[0]
    assert (newest.frame_id, newest.camera_id, newest.anomalous) == ("bench-20", "c1", True)
    detail = get_frame_detail(session=session, verdict_id=newest.id)
    assert (detail.images.image, detail.images.mask_png, detail.images.heatmap_png) == (
        b"img", b"mask", b"heat")
