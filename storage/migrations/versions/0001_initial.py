"""Initial schema: frames, verdicts, pool entries, review actions, chat messages.

Revision ID: 0001
Revises:
Create Date: 2025-11-30
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model's portable types: a revision never imports the live models.
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def _pk() -> sa.Column[int]:
    return sa.Column("id", BIGINT_PK, nullable=False)  # PK declared per table, by name


def _stamp(name: str) -> sa.Column[datetime]:
    return sa.Column(name, TIMESTAMP, server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    """Create every table."""
    op.create_table(
        "frames",
        _pk(),
        sa.Column("camera_id", sa.String(128), nullable=False),
        sa.Column("frame_id", sa.String(256), nullable=False),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("captured_at", TIMESTAMP, nullable=False),
        _stamp("received_at"),
        sa.Column("image", sa.LargeBinary(), nullable=True),
        sa.Column("image_uri", sa.Text(), nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_frames"),
        sa.UniqueConstraint("camera_id", "frame_id", name="uq_frames_camera_id_frame_id"),
    )
    op.create_index("ix_frames_product", "frames", ["product"])

    op.create_table(
        "verdicts",
        _pk(),
        sa.Column("frame_pk", BIGINT_PK, nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("anomalous", sa.Boolean(), nullable=False),
        sa.Column("positions", JSON, nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("mask_png", sa.LargeBinary(), nullable=True),
        sa.Column("model_id", sa.String(128), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("worker", sa.String(128), nullable=False),
        sa.Column("details", JSON, nullable=False),
        _stamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_verdicts"),
        sa.ForeignKeyConstraint(
            ["frame_pk"], ["frames.id"], name="fk_verdicts_frame_pk_frames", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("frame_pk", name="uq_verdicts_frame_pk"),
    )
    op.create_index("ix_verdicts_created_at", "verdicts", ["created_at"])
    op.create_index("ix_verdicts_anomalous_created_at", "verdicts", ["anomalous", "created_at"])

    op.create_table(
        "pool_entries",
        _pk(),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("image", sa.LargeBinary(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("source_frame_pk", BIGINT_PK, nullable=True),
        sa.Column("added_by", sa.String(128), nullable=False),
        _stamp("added_at"),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("deactivated_by", sa.String(128), nullable=True),
        sa.Column("deactivated_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_pool_entries"),
        sa.ForeignKeyConstraint(
            ["source_frame_pk"],
            ["frames.id"],
            name="fk_pool_entries_source_frame_pk_frames",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_pool_entries_product", "pool_entries", ["product"])

    op.create_table(
        "review_actions",
        _pk(),
        sa.Column("verdict_id", BIGINT_PK, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        _stamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_review_actions"),
        sa.ForeignKeyConstraint(
            ["verdict_id"],
            ["verdicts.id"],
            name="fk_review_actions_verdict_id_verdicts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_review_actions_verdict_id", "review_actions", ["verdict_id"])

    op.create_table(
        "chat_messages",
        _pk(),
        sa.Column("verdict_id", BIGINT_PK, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        _stamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_chat_messages"),
        sa.ForeignKeyConstraint(
            ["verdict_id"],
            ["verdicts.id"],
            name="fk_chat_messages_verdict_id_verdicts",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("role IN ('user', 'assistant')", name="ck_chat_messages_role"),
    )
    op.create_index("ix_chat_messages_verdict_id", "chat_messages", ["verdict_id"])


def downgrade() -> None:
    """Drop every table, dependants first."""
    for table in ("chat_messages", "review_actions", "pool_entries", "verdicts", "frames"):
        op.drop_table(table)
