"""What reviewers did and said about a verdict: the audit trail and the chat. Never commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import VerdictNotFoundError
from storage.models import ChatMessage, ReviewAction, Verdict

ChatRole = Literal["user", "assistant"]
CHAT_ROLES: tuple[str, ...] = get_args(ChatRole)


@dataclass(frozen=True)
class ReviewActionView:
    """One audit-log entry about a verdict."""

    id: int
    verdict_id: int
    action: str
    actor: str
    note: str
    created_at: datetime


@dataclass(frozen=True)
class ChatMessageView:
    """One stored chat turn about a verdict."""

    id: int
    verdict_id: int
    role: str
    text: str
    created_at: datetime


def record_review_action(
    *, session: Session, verdict_id: int, action: str, actor: str, note: str = ""
) -> int:
    """Append a reviewer's action to the audit log.

    Args:
        session: Open session.
        verdict_id: Verdict acted upon.
        action: What was done, e.g. ``"confirm_anomaly"``, ``"mark_normal"``, ``"add_to_pool"``.
        actor: Who did it.
        note: Free-text comment.

    Returns:
        The new action's id.

    Raises:
        VerdictNotFoundError: if there is no such verdict.
    """
    _require_verdict(session, verdict_id)
    row = ReviewAction(verdict_id=verdict_id, action=action, actor=actor, note=note)
    session.add(row)
    session.flush()
    return row.id


def list_review_actions(*, session: Session, verdict_id: int) -> list[ReviewActionView]:
    """Return a verdict's audit-log entries, oldest first."""
    query = (
        select(ReviewAction)
        .where(ReviewAction.verdict_id == verdict_id)
        .order_by(ReviewAction.created_at, ReviewAction.id)
    )
    return [
        ReviewActionView(
            id=row.id,
            verdict_id=row.verdict_id,
            action=row.action,
            actor=row.actor,
            note=row.note,
            created_at=row.created_at,
        )
        for row in session.scalars(query)
    ]


def add_chat_message(*, session: Session, verdict_id: int, role: str, text: str) -> int:
    """Append one turn to the chat about a verdict.

    Args:
        session: Open session.
        verdict_id: Verdict discussed.
        role: ``"user"`` or ``"assistant"``.
        text: The message.

    Returns:
        The new message's id.

    Raises:
        ValueError: for any other role.
        VerdictNotFoundError: if there is no such verdict.
    """
    if role not in CHAT_ROLES:
        msg = f"chat role must be one of {CHAT_ROLES}, got {role!r}"
        raise ValueError(msg)
    _require_verdict(session, verdict_id)
    row = ChatMessage(verdict_id=verdict_id, role=role, text=text)
    session.add(row)
    session.flush()
    return row.id


def list_chat_messages(*, session: Session, verdict_id: int) -> list[ChatMessageView]:
    """Return the chat about a verdict in the order it was written."""
    query = (
        select(ChatMessage)
        .where(ChatMessage.verdict_id == verdict_id)
        .order_by(ChatMessage.created_at, ChatMessage.id)
    )
    return [
        ChatMessageView(
            id=row.id,
            verdict_id=row.verdict_id,
            role=row.role,
            text=row.text,
            created_at=row.created_at,
        )
        for row in session.scalars(query)
    ]


def _require_verdict(session: Session, verdict_id: int) -> None:
    # Select the id only: loading the entity would fetch the mask blob too.
    if session.scalar(select(Verdict.id).where(Verdict.id == verdict_id)) is None:
        raise VerdictNotFoundError(verdict_id)
