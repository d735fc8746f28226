"""The few-shot pool: active entries per product, oldest first, soft-deleted with an actor."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import PoolEntry
from storage.repositories import (
    PoolEntryNotFoundError,
    add_pool_entry,
    deactivate_pool_entry,
    list_pool_images,
    list_verdicts,
    pool_products,
    record_verdicts,
)
from tests.storage.factories import make_record, png_bytes

RED, GREEN, BLUE = png_bytes((255, 0, 0)), png_bytes((0, 255, 0)), png_bytes((0, 0, 255))


def _add(session: Session, product: str, image: bytes, **kwargs: object) -> int:
    return add_pool_entry(
        session=session,
        product=product,
        image_png=image,
        source=str(kwargs.get("source", "seed")),
        added_by="tester",
        frame_pk=kwargs.get("frame_pk"),  # type: ignore[arg-type]
    )


def test_round_trip_oldest_first(session: Session) -> None:
    for image in (RED, GREEN, BLUE):
        _add(session, "bottle", image)
    _add(session, "can", RED)
    session.commit()

    assert list_pool_images(session=session, product="bottle") == [RED, GREEN, BLUE]
    assert list_pool_images(session=session, product="can") == [RED]
    assert list_pool_images(session=session, product="screw") == []


def test_products_are_those_with_active_entries(session: Session) -> None:
    _add(session, "can", RED)
    _add(session, "bottle", RED)
    retired = _add(session, "screw", RED)
    deactivate_pool_entry(session=session, entry_id=retired, actor="alice")

    assert pool_products(session=session) == ["bottle", "can"]


def test_deactivated_entries_leave_the_pool_but_stay_audited(session: Session) -> None:
    _add(session, "bottle", RED)
    middle = _add(session, "bottle", GREEN)
    _add(session, "bottle", BLUE)

    deactivate_pool_entry(session=session, entry_id=middle, actor="alice")
    deactivate_pool_entry(session=session, entry_id=middle, actor="bob")
    session.commit()

    assert list_pool_images(session=session, product="bottle") == [RED, BLUE]
    entry = session.get(PoolEntry, middle)
    assert entry is not None
    assert (entry.active, entry.deactivated_by) == (False, "alice")
    assert entry.deactivated_at is not None


def test_deactivating_unknown_entry(session: Session) -> None:
    with pytest.raises(PoolEntryNotFoundError, match="pool entry 404 does not exist"):
        deactivate_pool_entry(session=session, entry_id=404, actor="alice")


def test_entry_from_a_reviewed_frame(session: Session) -> None:
    record_verdicts(session=session, records=[make_record(0, anomalous=False)])
    (view,) = list_verdicts(session=session)

    entry_id = _add(session, "bottle", GREEN, source="review", frame_pk=view.frame_pk)
    session.commit()

    entry = session.get(PoolEntry, entry_id)
    assert entry is not None
    assert (entry.source, entry.source_frame_pk, entry.added_by) == (
        "review",
        view.frame_pk,
        "tester",
    )


def test_entry_must_reference_an_existing_frame(session: Session) -> None:
    # Foreign keys are enforced on SQLite too (make_engine turns them on).
    with pytest.raises(IntegrityError):
        _add(session, "bottle", GREEN, source="review", frame_pk=123456)
