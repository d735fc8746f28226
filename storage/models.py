"""The relational schema: frames, their verdicts, the few-shot pool and the review trail.

Changing a model means adding an Alembic revision under ``storage/migrations/versions``;
``tests/storage/test_migrate.py`` fails while the two disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.types import BigIntPK, PortableJSON, UtcDateTime, utcnow

# Deterministic constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with the naming convention and the portable type map."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UtcDateTime(),
        dict[str, Any]: PortableJSON,
        list[str]: PortableJSON,
        bytes: LargeBinary(),
    }


def _created_at() -> Mapped[datetime]:
    return mapped_column(default=utcnow, server_default=func.now())


class Frame(Base):
    """One camera frame, unique per ``(camera_id, frame_id)`` so replays are harmless."""

    __tablename__ = "frames"
    __table_args__ = (UniqueConstraint("camera_id", "frame_id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(128))
    frame_id: Mapped[str] = mapped_column(String(256))
    product: Mapped[str] = mapped_column(String(128), index=True)
    captured_at: Mapped[datetime]
    received_at: Mapped[datetime] = _created_at()
    image: Mapped[bytes | None]  # encoded PNG/JPEG; None when only image_uri is kept
    image_uri: Mapped[str | None] = mapped_column(Text)
    # "metadata" is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)


class Verdict(Base):
    """The detector's result for one frame (exactly one per frame)."""

    __tablename__ = "verdicts"
    __table_args__ = (Index("ix_verdicts_anomalous_created_at", "anomalous", "created_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    frame_pk: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"), unique=True)
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    anomalous: Mapped[bool] = mapped_column(Boolean)
    positions: Mapped[list[str]] = mapped_column(default=list)  # grid words, e.g. "top left"
    answer: Mapped[str] = mapped_column(Text)
    mask_png: Mapped[bytes | None]
    model_id: Mapped[str] = mapped_column(String(128))
    latency_ms: Mapped[float] = mapped_column(Float)
    worker: Mapped[str] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)  # model evidence
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.now(), index=True
    )


class PoolEntry(Base):
    """A normal reference image for few-shot inference on one product."""

    __tablename__ = "pool_entries"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    product: Mapped[str] = mapped_column(String(128), index=True)
    image: Mapped[bytes]  # PNG
    source: Mapped[str] = mapped_column(String(32))  # "seed", "review", ...
    source_frame_pk: Mapped[int | None] = mapped_column(
        ForeignKey("frames.id", ondelete="SET NULL")
    )
    added_by: Mapped[str] = mapped_column(String(128))
    added_at: Mapped[datetime] = _created_at()
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    deactivated_by: Mapped[str | None] = mapped_column(String(128))
    deactivated_at: Mapped[datetime | None]


class ReviewAction(Base):
    """Audit log of what a reviewer did to a verdict."""

    __tablename__ = "review_actions"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    verdict_id: Mapped[int] = mapped_column(
        ForeignKey("verdicts.id", ondelete="CASCADE"), index=True
    )
    action: Mapped[str] = mapped_column(String(64))  # "confirm_anomaly", "mark_normal", ...
    actor: Mapped[str] = mapped_column(String(128))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = _created_at()


class ChatMessage(Base):
    """One turn of the conversation about a verdict."""

    __tablename__ = "chat_messages"
    __table_args__ = (CheckConstraint("role IN ('user', 'assistant')", name="role"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    verdict_id: Mapped[int] = mapped_column(
        ForeignKey("verdicts.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _created_at()
