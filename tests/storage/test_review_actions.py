"""The dashboard's frame actions: decisions, add to pool in one transaction, undo, roles."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from storage.repositories import (
    ImageUnavailableError,
    PermissionDeniedError,
    create_user,
    get_verdict,
    list_chat_messages,
    list_pool_changes,
    list_pool_images,
    list_review_actions,
    list_verdicts,
    pool_version,
    record_chat_turn,
    record_verdicts,
    review_verdict,
    unannounced_pool_changes,
    undo_pool_add,
)
from tests.storage.factories import make_record


@pytest.fixture
def flagged(session: Session) -> int:
    create_user(session=session, name="olga", password="operator-pw", role="operator")
    create_user(session=session, name="ed", password="engineer-pw", role="engineer")
    record_verdicts(session=session, records=[make_record(1), make_record(3, image=None)])
    session.commit()
    return list_verdicts(session=session)[-1].id  # frame f-1 (with an image)


def test_decisions_set_the_status_and_leave_an_audit_row(session: Session,
                                                          flagged: int) -> None:
    review_verdict(session=session, verdict_id=flagged, user="olga", decision="unsure")
    review_verdict(session=session, verdict_id=flagged, user="olga", decision="defect",
                   note="scratch")
    session.commit()

    view = get_verdict(session=session, verdict_id=flagged)
    assert (view.review_status, view.reviewed_by) == ("defect", "olga")
    actions = list_review_actions(session=session, verdict_id=flagged)
    assert [(a.action, a.actor, a.note) for a in actions] == [
        ("unsure", "olga", ""), ("confirm_defect", "olga", "scratch")]


def test_add_to_pool_writes_entry_version_and_audit_together(session: Session,
                                                              flagged: int) -> None:
    before = pool_version(session=session, product="bottle")
    outcome = review_verdict(session=session, verdict_id=flagged, user="ed",
                             decision="normal", add_to_pool=True)
    session.commit()

    assert outcome.pool_change is not None
    assert outcome.pool_change.version == before + 1 == pool_version(session=session,
                                                                     product="bottle")
    assert len(list_pool_images(session=session, product="bottle")) == 1
    [change] = list_pool_changes(session=session, product="bottle")
    assert (change.action, change.actor, change.verdict_id) == ("add", "ed", flagged)
    assert [c.id for c in unannounced_pool_changes(session=session)] == [change.id]
    [action] = list_review_actions(session=session, verdict_id=flagged)
    assert (action.action, action.actor) == ("not_defect+add_to_pool", "ed")


def test_an_operator_is_refused_a_pool_change_and_nothing_is_written(session: Session,
                                                                      flagged: int) -> None:
    with pytest.raises(PermissionDeniedError, match="needs engineer"):
        review_verdict(session=session, verdict_id=flagged, user="olga", decision="normal",
                       add_to_pool=True)
    session.rollback()

    assert list_pool_images(session=session, product="bottle") == []
    assert list_review_actions(session=session, verdict_id=flagged) == []
    assert get_verdict(session=session, verdict_id=flagged).review_status is None
    # Without the pool, "not a defect" is an operator's decision.
    review_verdict(session=session, verdict_id=flagged, user="olga", decision="normal")
    assert get_verdict(session=session, verdict_id=flagged).review_status == "normal"


def test_undo_removes_the_entry_and_is_audited(session: Session, flagged: int) -> None:
    outcome = review_verdict(session=session, verdict_id=flagged, user="ed",
                             decision="normal", add_to_pool=True)
    assert outcome.pool_change is not None
    entry = outcome.pool_change.entry_id
    with pytest.raises(PermissionDeniedError):
        undo_pool_add(session=session, verdict_id=flagged, user="olga", entry_id=entry)
    removal = undo_pool_add(session=session, verdict_id=flagged, user="ed", entry_id=entry)
    session.commit()

    assert removal is not None
    assert removal.note == "undo"
    assert removal.version == outcome.pool_change.version + 1
    assert list_pool_images(session=session, product="bottle") == []
    assert [a.action for a in list_review_actions(session=session, verdict_id=flagged)] == [
        "not_defect+add_to_pool", "undo_add_to_pool"]
    assert undo_pool_add(session=session, verdict_id=flagged, user="ed", entry_id=entry) is None


def test_add_to_pool_needs_the_image(session: Session, flagged: int) -> None:
    without_image = list_verdicts(session=session)[0].id  # frame f-3, image not stored
    with pytest.raises(ImageUnavailableError):
        review_verdict(session=session, verdict_id=without_image, user="ed",
                       decision="normal", add_to_pool=True)
    with pytest.raises(ValueError, match="only a frame judged normal"):
        review_verdict(session=session, verdict_id=flagged, user="ed", decision="defect",
                       add_to_pool=True)


def test_chat_turns_are_stored_with_user_and_model(session: Session, flagged: int) -> None:
    record_chat_turn(session=session, verdict_id=flagged, user="olga", question="Where?",
                     answer="Top left.", model="cpu-small")
    session.commit()

    chat = list_chat_messages(session=session, verdict_id=flagged)
    assert [(m.role, m.author, m.text) for m in chat] == [
        ("user", "olga", "Where?"), ("assistant", "cpu-small", "Top left.")]
    assert all(m.created_at is not None for m in chat)
    with pytest.raises(PermissionDeniedError):
        record_chat_turn(session=session, verdict_id=flagged, user="ghost", question="?",
                         answer="!")
