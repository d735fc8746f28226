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
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
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
    __table_args__ = (
        UniqueConstraint("camera_id", "frame_id"),
        # Rows arrive in time order, so a BRIN index (a few pages for 10^7 rows) finds the
        # old ranges retention deletes without a btree's insert cost.
        Index("ix_frames_received_at", "received_at", postgresql_using="brin"),
        # Only frames that still keep an image: retention's candidates, small at any age.
        Index("ix_frames_kept_images", "received_at",
              postgresql_where=text("image_uri IS NOT NULL OR image IS NOT NULL"),
              sqlite_where=text("image_uri IS NOT NULL OR image IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    camera_id: Mapped[str] = mapped_column(String(128))
    frame_id: Mapped[str] = mapped_column(String(256))
    product: Mapped[str] = mapped_column(String(128), index=True)
    captured_at: Mapped[datetime]
    received_at: Mapped[datetime] = _created_at()
    image: Mapped[bytes | None]  # legacy inline PNG/JPEG; new images live in the blob store
    image_uri: Mapped[str | None] = mapped_column(Text)  # blob-store URI of the kept image
    image_sha256: Mapped[str | None] = mapped_column(String(64))  # hex digest of the blob
    # "metadata" is reserved on declarative classes, hence the attribute name.
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)


class Verdict(Base):
    """The detector's result for one frame (exactly one per frame)."""

    __tablename__ = "verdicts"
    __table_args__ = (
        # The review queue: flagged verdicts newest first (keyset on created_at, id). Partial
        # indexes stay a few percent of the table, whatever its size (see agpt bench storage).
        Index("ix_verdicts_flagged", "created_at", "id",
              postgresql_where=text("anomalous"), sqlite_where=text("anomalous = 1")),
        Index("ix_verdicts_unreviewed", "created_at", "id",
              postgresql_where=text("anomalous AND reviewed_at IS NULL"),
              sqlite_where=text("anomalous AND reviewed_at IS NULL")),
        # The queue filtered by one camera or one product (copied from the frame).
        Index("ix_verdicts_flagged_camera", "camera_id", "created_at", "id",
              postgresql_where=text("anomalous"), sqlite_where=text("anomalous = 1")),
        Index("ix_verdicts_flagged_product", "product", "created_at", "id",
              postgresql_where=text("anomalous"), sqlite_where=text("anomalous = 1")),
        # The overview's window counts read this index only (PostgreSQL).
        Index("ix_verdicts_created_at", "created_at",
              postgresql_include=["camera_id", "product", "anomalous", "reviewed_at"]),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    frame_pk: Mapped[int] = mapped_column(ForeignKey("frames.id", ondelete="CASCADE"), unique=True)
    # The frame's camera and product, copied so the queue filters without a join.
    camera_id: Mapped[str] = mapped_column(String(128))
    product: Mapped[str] = mapped_column(String(128))
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    anomalous: Mapped[bool] = mapped_column(Boolean)
    positions: Mapped[list[str]] = mapped_column(default=list)  # grid words, e.g. "top left"
    answer: Mapped[str] = mapped_column(Text)
    mask_png: Mapped[bytes | None]
    # The anomaly map as an 8-bit greyscale PNG at map resolution; pixel p stands for
    # heatmap_min + p / 255 * (heatmap_max - heatmap_min) in the map's own units.
    heatmap_png: Mapped[bytes | None]
    heatmap_min: Mapped[float | None] = mapped_column(Float)
    heatmap_max: Mapped[float | None] = mapped_column(Float)
    model_id: Mapped[str] = mapped_column(String(128))
    latency_ms: Mapped[float] = mapped_column(Float)
    worker: Mapped[str] = mapped_column(String(128))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)  # model evidence
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    # The latest review decision ("defect", "normal", "unsure"; None: not reviewed), who
    # made it and when; the full trail is in review_actions.
    review: Mapped[str | None] = mapped_column(String(64))
    reviewed_by: Mapped[str | None] = mapped_column(String(128))
    reviewed_at: Mapped[datetime | None]


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
    # The user who wrote a "user" turn, the model id behind an "assistant" turn.
    author: Mapped[str] = mapped_column(String(128), default="", server_default="")
    created_at: Mapped[datetime] = _created_at()


class PoolVersion(Base):
    """The current version of one product's pool: raised by every add, removal and restore."""

    __tablename__ = "pool_versions"

    product: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class PoolChange(Base):
    """One change of a product's pool: the audit row, the version history and the outbox.

    ``announced_at`` stays None until the change has been published on the pool topic, so a
    change committed while no publisher was reachable is announced later.
    """

    __tablename__ = "pool_changes"
    __table_args__ = (
        UniqueConstraint("product", "version"),
        CheckConstraint("action IN ('add', 'remove', 'restore')", name="action"),
        Index("ix_pool_changes_unannounced", "id",
              postgresql_where=text("announced_at IS NULL"),
              sqlite_where=text("announced_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    product: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))
    entry_id: Mapped[int] = mapped_column(ForeignKey("pool_entries.id", ondelete="CASCADE"),
                                          index=True)
    actor: Mapped[str] = mapped_column(String(128))
    note: Mapped[str] = mapped_column(Text, default="", server_default="")
    verdict_id: Mapped[int | None] = mapped_column(
        ForeignKey("verdicts.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = _created_at()
    announced_at: Mapped[datetime | None]


class User(Base):
    """A local account of the review dashboard (or an OIDC user known by name)."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('operator', 'engineer', 'admin')", name="role"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    # argon2id PHC string (salt and parameters inside); None for accounts that log in by OIDC.
    password_hash: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_by: Mapped[str] = mapped_column(String(128), default="", server_default="")
    created_at: Mapped[datetime] = _created_at()
    disabled_by: Mapped[str | None] = mapped_column(String(128))
    disabled_at: Mapped[datetime | None]
