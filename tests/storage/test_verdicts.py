"""record_verdicts is idempotent per (camera_id, frame_id); reads come back blob-free."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from storage.engine import make_session_factory
from storage.models import Frame, Verdict
from storage.repositories import (
    VerdictNotFoundError,
    count_verdicts,
    get_verdict_images,
    list_verdicts,
    record_verdicts,
)
from tests.storage.factories import T0, make_record, mask_png, png_bytes


def _row_counts(session: Session) -> tuple[int, int]:
    frames = session.scalar(select(func.count()).select_from(Frame))
    verdicts = session.scalar(select(func.count()).select_from(Verdict))
    return int(frames or 0), int(verdicts or 0)


def test_replayed_batch_adds_nothing(session: Session) -> None:
    batch = [make_record(i) for i in range(5)]

    assert record_verdicts(session=session, records=batch) == 5
    session.commit()
    assert record_verdicts(session=session, records=batch) == 0
    session.commit()

    assert _row_counts(session) == (5, 5)


def test_duplicate_inside_a_batch_keeps_the_first(session: Session) -> None:
    first = make_record(1, answer="first delivery")
    again = make_record(1, answer="redelivered", score=0.42)

    assert record_verdicts(session=session, records=[first, make_record(2), again]) == 2

    assert _row_counts(session) == (2, 2)
    answers = {view.frame_id: view.answer for view in list_verdicts(session=session)}
    assert answers["f-1"] == "first delivery"


def test_mixed_batch_counts_only_new_frames(session: Session) -> None:
    record_verdicts(session=session, records=[make_record(0), make_record(1)])

    inserted = record_verdicts(session=session, records=[make_record(i) for i in range(4)])

    assert inserted == 2
    assert _row_counts(session) == (4, 4)


def test_same_frame_id_on_another_camera_is_a_new_frame(session: Session) -> None:
    batch = [make_record(0), make_record(0, camera_id="cam-b")]

    assert record_verdicts(session=session, records=batch) == 2


def test_replay_from_another_transaction_is_ignored(database_engine: Engine) -> None:
    factory = make_session_factory(database_engine)
    with factory() as first:
        record_verdicts(session=first, records=[make_record(7)])
        first.commit()
    with factory() as second:
        assert record_verdicts(session=second, records=[make_record(7)]) == 0
        second.commit()
        assert _row_counts(second) == (1, 1)


def test_empty_batch_is_a_no_op(session: Session) -> None:
    assert record_verdicts(session=session, records=[]) == 0


def test_does_not_commit(session: Session) -> None:
    record_verdicts(session=session, records=[make_record(0)])
    session.rollback()

    assert _row_counts(session) == (0, 0)


def test_round_trips_every_field(session: Session) -> None:
    record = make_record(
        3,
        captured_at=datetime(2025, 6, 1, 14, 30, tzinfo=timezone(timedelta(hours=2))),
        metadata={"line": 3, "nested": {"ok": True}},
        positions=["top left", "center"],
    )
    record_verdicts(session=session, records=[record])
    session.commit()

    (view,) = list_verdicts(session=session)
    assert (view.camera_id, view.frame_id, view.product) == ("cam-a", "f-3", "bottle")
    assert view.captured_at == record.captured_at
    assert view.captured_at.tzinfo == UTC
    assert (view.score, view.threshold, view.anomalous) == (0.9, 0.5, True)
    assert view.positions == ["top left", "center"]
    assert view.answer == record.answer
    assert (view.model_id, view.latency_ms, view.worker) == ("tiny-test", 12.5, "worker-0")
    assert view.created_at.tzinfo == UTC
    assert abs(datetime.now(UTC) - view.created_at) < timedelta(minutes=5)
    frame = session.get(Frame, view.frame_pk)
    assert frame is not None
    assert frame.meta == {"line": 3, "nested": {"ok": True}}
    assert not hasattr(view, "image")
    assert not hasattr(view, "mask_png")


def test_naive_capture_time_is_rejected(session: Session) -> None:
    naive = make_record(0, captured_at=datetime(2025, 1, 1, 8, 0))  # noqa: DTZ001

    with pytest.raises(ValueError, match="f-0: captured_at is a naive datetime"):
        record_verdicts(session=session, records=[naive])


def test_list_is_newest_first_and_filters(session: Session) -> None:
    record_verdicts(session=session, records=[make_record(i) for i in range(6)])
    record_verdicts(session=session, records=[make_record(6, product="can", anomalous=True)])

    newest_first = [view.frame_id for view in list_verdicts(session=session)]
    flagged = list_verdicts(session=session, anomalous=True)
    normal = list_verdicts(session=session, anomalous=False, product="bottle")
    flagged_cans = list_verdicts(session=session, anomalous=True, product="can")

    assert newest_first == [f"f-{i}" for i in reversed(range(7))]
    assert [view.frame_id for view in flagged] == ["f-6", "f-5", "f-3", "f-1"]
    assert [view.frame_id for view in normal] == ["f-4", "f-2", "f-0"]
    assert [view.frame_id for view in flagged_cans] == ["f-6"]


def test_list_pages(session: Session) -> None:
    record_verdicts(session=session, records=[make_record(i) for i in range(5)])

    page = list_verdicts(session=session, limit=2, offset=2)

    assert [view.frame_id for view in page] == ["f-2", "f-1"]


def test_count_filters(session: Session) -> None:
    record_verdicts(session=session, records=[make_record(i) for i in range(5)])
    record_verdicts(session=session, records=[make_record(9, product="can", anomalous=False)])

    assert count_verdicts(session=session) == 6
    assert count_verdicts(session=session, anomalous=True) == 2
    assert count_verdicts(session=session, anomalous=False) == 4
    assert count_verdicts(session=session, product="can") == 1
    assert count_verdicts(session=session, product="bottle", anomalous=True) == 2
    assert count_verdicts(session=session, product="nothing") == 0


def test_images_load_lazily(session: Session) -> None:
    image = png_bytes((200, 10, 10))
    record_verdicts(
        session=session,
        records=[
            make_record(1, image=image, mask_png=mask_png()),
            make_record(2, image=None, image_uri="s3://frames/f-2.png", mask_png=None),
        ],
    )
    views = {view.frame_id: view for view in list_verdicts(session=session)}

    assert get_verdict_images(session=session, verdict_id=views["f-1"].id) == (image, mask_png())
    assert get_verdict_images(session=session, verdict_id=views["f-2"].id) == (None, None)


def test_images_of_unknown_verdict(session: Session) -> None:
    with pytest.raises(VerdictNotFoundError, match="verdict 999 does not exist"):
        get_verdict_images(session=session, verdict_id=999)


def test_large_batch_is_one_transaction(session: Session) -> None:
    batch = [make_record(i, captured_at=T0, image=None) for i in range(1500)]

    assert record_verdicts(session=session, records=batch) == 1500
    assert record_verdicts(session=session, records=batch[::-1]) == 0
    assert _row_counts(session) == (1500, 1500)


def test_batch_costs_three_statements(session: Session, database_engine: Engine) -> None:
    statements: list[str] = []

    def _count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.strip().upper() != "BEGIN":
            statements.append(statement)

    session.connection()  # begin outside the count
    event.listen(database_engine, "before_cursor_execute", _count)
    try:
        record_verdicts(session=session, records=[make_record(i) for i in range(200)])
    finally:
        event.remove(database_engine, "before_cursor_execute", _count)

    assert len(statements) == 3, statements


def test_concurrent_workers_store_a_frame_once(database_engine: Engine) -> None:
    # After a rebalance two workers may hold the same frame; the later one must wait for the
    # first to commit and then insert nothing.
    factory = make_session_factory(database_engine)
    results: list[int] = []

    def _second_worker() -> None:
        with factory() as second:
            redelivered = make_record(1, worker="worker-1")
            results.append(record_verdicts(session=second, records=[redelivered]))
            second.commit()

    with factory() as first:
        assert record_verdicts(session=first, records=[make_record(1)]) == 1
        thread = threading.Thread(target=_second_worker)
        thread.start()
        thread.join(timeout=0.5)  # let it reach the insert and block on our uncommitted row
        first.commit()
    thread.join(timeout=30)

    assert results == [0]
    with factory() as check:
        assert _row_counts(check) == (1, 1)
        assert [view.worker for view in list_verdicts(session=check)] == ["worker-0"]
