"""Review actions and chat messages round-trip in order, attached to existing verdicts."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from storage.repositories import (
    VerdictNotFoundError,
    add_chat_message,
    list_chat_messages,
    list_review_actions,
    list_verdicts,
    record_review_action,
    record_verdicts,
)
from tests.storage.factories import make_record


@pytest.fixture
def verdict_id(session: Session) -> int:
    record_verdicts(session=session, records=[make_record(1)])
    session.commit()
    return list_verdicts(session=session)[0].id


def test_review_actions_round_trip(session: Session, verdict_id: int) -> None:
    first = record_review_action(
        session=session, verdict_id=verdict_id, action="confirm_anomaly", actor="alice"
    )
    second = record_review_action(
        session=session,
        verdict_id=verdict_id,
        action="add_to_pool",
        actor="bob",
        note="actually fine",
    )
    session.commit()

    actions = list_review_actions(session=session, verdict_id=verdict_id)

    assert [action.id for action in actions] == [first, second]
    assert [(a.action, a.actor, a.note) for a in actions] == [
        ("confirm_anomaly", "alice", ""),
        ("add_to_pool", "bob", "actually fine"),
    ]
    assert all(action.verdict_id == verdict_id for action in actions)


def test_chat_round_trip_in_order(session: Session, verdict_id: int) -> None:
    turns = [
        ("user", "Where is the defect?"),
        ("assistant", "Top left: a scratch."),
        ("user", "How long?"),
    ]
    ids = [
        add_chat_message(session=session, verdict_id=verdict_id, role=role, text=text)
        for role, text in turns
    ]
    session.commit()

    messages = list_chat_messages(session=session, verdict_id=verdict_id)

    assert [message.id for message in messages] == ids
    assert [(message.role, message.text) for message in messages] == turns
    assert all(message.created_at.tzinfo is not None for message in messages)


def test_chat_of_another_verdict_is_separate(session: Session, verdict_id: int) -> None:
    add_chat_message(session=session, verdict_id=verdict_id, role="user", text="hi")

    record_verdicts(session=session, records=[make_record(2)])
    other = next(v.id for v in list_verdicts(session=session) if v.id != verdict_id)

    assert list_chat_messages(session=session, verdict_id=other) == []


def test_chat_rejects_unknown_roles(session: Session, verdict_id: int) -> None:
    with pytest.raises(ValueError, match="chat role must be one of"):
        add_chat_message(session=session, verdict_id=verdict_id, role="system", text="x")


def test_unknown_verdict(session: Session) -> None:
    with pytest.raises(VerdictNotFoundError):
        record_review_action(session=session, verdict_id=77, action="mark_normal", actor="a")
    with pytest.raises(VerdictNotFoundError):
        add_chat_message(session=session, verdict_id=77, role="user", text="hello")
