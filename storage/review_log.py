"""What reviewers did and said about a verdict: the audit trail, the decisions and the chat.

The action functions (:func:`review_verdict`, :func:`undo_pool_add`, :func:`record_chat_turn`)
are what the dashboard calls: each checks the acting user's role in the database first
(:func:`storage.users.require_role`), then writes its rows; the caller commits, so an action
and its audit row land together or not at all. Never commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import ImageUnavailableError, VerdictNotFoundError
from storage.models import ChatMessage, Frame, ReviewAction, Verdict
from storage.pool import POOL_ROLE, PoolChangeView, add_pool_entry, latest_change, to_png
from storage.pool import pool_remove as _pool_remove
from storage.types import utcnow
from storage.users import require_role

ChatRole = Literal["user", "assistant"]
CHAT_ROLES: tuple[str, ...] = get_args(ChatRole)

Decision = Literal["defect", "normal", "unsure"]
DECISIONS: tuple[str, ...] = get_args(Decision)
# The audit-log action of each decision.
DECISION_ACTIONS = {"defect": "confirm_defect", "normal": "not_defect", "unsure": "unsure"}
REVIEW_ROLE = "operator"  # the least role that may review and chat


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
    author: str = ""


@dataclass(frozen=True)
class ReviewOutcome:
    """What :func:`review_verdict` wrote.

    Attributes:
        action_id: The audit-log row.
        status: The verdict's review status now.
        pool_change: The pool addition (with the product's new version), if one was made.
    """

    action_id: int
    status: str
    pool_change: PoolChangeView | None = None


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


def add_chat_message(*, session: Session, verdict_id: int, role: str, text: str,
                     author: str = "") -> int:
    """Append one turn to the chat about a verdict.

    Args:
        session: Open session.
        verdict_id: Verdict discussed.
        role: ``"user"`` or ``"assistant"``.
        text: The message.
        author: The user who wrote it, or the model that answered.

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
    row = ChatMessage(verdict_id=verdict_id, role=role, text=text, author=author)
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
            author=row.author,
        )
        for row in session.scalars(query)
    ]


def review_verdict(*, session: Session, verdict_id: int, user: str, decision: str,
                   note: str = "", add_to_pool: bool = False,
                   image: bytes | None = None) -> ReviewOutcome:
    """Record a reviewer's decision on a verdict: "Confirm defect", "Not a defect", "Unsure".

    ``decision="normal", add_to_pool=True`` is "Not a defect - add to pool": the frame's
    image becomes a pool entry of its product, with its change-log row (the product's
    version goes up), in the caller's transaction; the announcement on the pool topic
    follows the commit (``pool_changes.announced_at``).

    Args:
        session: Open session.
        verdict_id: The verdict reviewed.
        user: The acting user (operator or above; engineer or above with ``add_to_pool``).
        decision: ``"defect"``, ``"normal"`` or ``"unsure"``.
        note: Free-text comment.
        add_to_pool: Also add the frame to its product's pool (``decision="normal"`` only).
        image: The frame's image bytes when the database holds only its URI (e.g. read from
            the blob store); None takes the stored image.

    Returns:
        The audit row, the new review status and the pool change, if any.

    Raises:
        PermissionDeniedError: the user may not do this.
        ValueError: an unknown decision, or ``add_to_pool`` with another decision than
            ``"normal"``, or an unreadable image.
        VerdictNotFoundError: no such verdict.
        ImageUnavailableError: ``add_to_pool`` but no image is stored or given.
    """
    if decision not in DECISIONS:
        msg = f"decision must be one of {DECISIONS}, got {decision!r}"
        raise ValueError(msg)
    if add_to_pool and decision != "normal":
        msg = "only a frame judged normal can be added to the pool"
        raise ValueError(msg)
    require_role(session=session, user=user, role=POOL_ROLE if add_to_pool else REVIEW_ROLE)
    verdict = session.get(Verdict, verdict_id, with_for_update=True)
    if verdict is None:
        raise VerdictNotFoundError(verdict_id)
    change = None
    if add_to_pool:
        frame = session.execute(select(Frame.product, Frame.image)
                                .where(Frame.id == verdict.frame_pk)).one()
        data = image if image is not None else frame.image
        if data is None:
            msg = f"verdict {verdict_id}: the frame's image is not stored; pass its bytes"
            raise ImageUnavailableError(msg)
        entry_id = add_pool_entry(session=session, product=frame.product,
                                  image_png=to_png(data), source="review", added_by=user,
                                  frame_pk=verdict.frame_pk, verdict_id=verdict_id,
                                  note=note or "not a defect")
        change = latest_change(session=session, entry_id=entry_id)
    verdict.review = decision
    verdict.reviewed_by = user
    verdict.reviewed_at = utcnow()
    action = DECISION_ACTIONS[decision] + ("+add_to_pool" if change else "")
    text = note if change is None else f"{note} (pool entry {change.entry_id})".strip()
    action_id = record_review_action(session=session, verdict_id=verdict_id, action=action,
                                     actor=user, note=text)
    return ReviewOutcome(action_id, decision, change)


def undo_pool_add(*, session: Session, verdict_id: int, user: str,
                  entry_id: int) -> PoolChangeView | None:
    """Undo "add to pool": remove the entry again (audited twice: pool change and review log).

    Returns:
        The removal, or None when the entry had been removed already.

    Raises:
        PermissionDeniedError: the user may not change pools.
        PoolEntryNotFoundError: no such entry.
        VerdictNotFoundError: no such verdict.
    """
    _require_verdict(session, verdict_id)
    change = _pool_remove(session=session, user=user, entry_id=entry_id, note="undo")
    if change is not None:
        record_review_action(session=session, verdict_id=verdict_id, action="undo_add_to_pool",
                             actor=user, note=f"pool entry {entry_id} removed")
    return change


def record_chat_turn(*, session: Session, verdict_id: int, user: str, question: str,
                     answer: str, model: str = "assistant") -> tuple[int, int]:
    """Store one question and its answer about a verdict, as ``user`` (operator or above).

    Returns:
        The ids of the question and the answer rows.

    Raises:
        PermissionDeniedError: the user may not chat.
        VerdictNotFoundError: no such verdict.
    """
    require_role(session=session, user=user, role=REVIEW_ROLE)
    asked = add_chat_message(session=session, verdict_id=verdict_id, role="user",
                             text=question, author=user)
    answered = add_chat_message(session=session, verdict_id=verdict_id, role="assistant",
                                text=answer, author=model)
    return asked, answered


def _require_verdict(session: Session, verdict_id: int) -> None:
    # Select the id only: loading the entity would fetch the mask blob too.
    if session.scalar(select(Verdict.id).where(Verdict.id == verdict_id)) is None:
        raise VerdictNotFoundError(verdict_id)
