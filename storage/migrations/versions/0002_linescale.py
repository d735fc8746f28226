"""Line scale: blob-store image hashes, camera/product on verdicts, partial and BRIN indexes.

Frames keep ``image_sha256`` beside ``image_uri`` (images move to the blob store); verdicts
carry a copy of the frame's camera and product so the review queue and the overview filter
and group on one table; the flagged queue gets partial indexes (newest first, per camera, per
product), the overview a covering index on ``created_at``, and frames a BRIN index on arrival
time plus a partial index on the frames that still keep an image (retention's candidates).
Chosen by ``agpt bench storage`` (10^5 to 10^7 verdicts).

Revision ID: 0002
Revises: op11_operator_loop
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "op11_operator_loop"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEPT = "image_uri IS NOT NULL OR image IS NOT NULL"
INCLUDE = ["camera_id", "product", "anomalous", "reviewed_at"]


def upgrade() -> None:
    """Add the columns (backfilled from the frames), swap the verdict indexes."""
    with op.batch_alter_table("frames") as batch:
        batch.add_column(sa.Column("image_sha256", sa.String(64), nullable=True))
    with op.batch_alter_table("verdicts") as batch:
        batch.add_column(sa.Column("camera_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("product", sa.String(128), nullable=True))
    op.execute(
        "UPDATE verdicts SET camera_id = (SELECT f.camera_id FROM frames f "
        "WHERE f.id = verdicts.frame_pk), product = (SELECT f.product FROM frames f "
        "WHERE f.id = verdicts.frame_pk)"
    )
    with op.batch_alter_table("verdicts") as batch:
        batch.alter_column("camera_id", existing_type=sa.String(128), nullable=False)
        batch.alter_column("product", existing_type=sa.String(128), nullable=False)
    op.drop_index("ix_verdicts_anomalous_created_at", table_name="verdicts")
    op.drop_index("ix_verdicts_created_at", table_name="verdicts")
    op.create_index("ix_verdicts_created_at", "verdicts", ["created_at"],
                    postgresql_include=INCLUDE)
    op.create_index("ix_verdicts_flagged", "verdicts", ["created_at", "id"],
                    postgresql_where=sa.text("anomalous"), sqlite_where=sa.text("anomalous = 1"))
    op.create_index("ix_verdicts_flagged_camera", "verdicts", ["camera_id", "created_at", "id"],
                    postgresql_where=sa.text("anomalous"), sqlite_where=sa.text("anomalous = 1"))
    op.create_index("ix_verdicts_flagged_product", "verdicts", ["product", "created_at", "id"],
                    postgresql_where=sa.text("anomalous"), sqlite_where=sa.text("anomalous = 1"))
    op.create_index("ix_frames_received_at", "frames", ["received_at"],
                    postgresql_using="brin")
    op.create_index("ix_frames_kept_images", "frames", ["received_at"],
                    postgresql_where=sa.text(KEPT), sqlite_where=sa.text(KEPT))


def downgrade() -> None:
    """Back to the previous revision's indexes and columns."""
    op.drop_index("ix_frames_kept_images", table_name="frames")
    op.drop_index("ix_frames_received_at", table_name="frames")
    op.drop_index("ix_verdicts_flagged_product", table_name="verdicts")
    op.drop_index("ix_verdicts_flagged_camera", table_name="verdicts")
    op.drop_index("ix_verdicts_flagged", table_name="verdicts")
    op.drop_index("ix_verdicts_created_at", table_name="verdicts")
    op.create_index("ix_verdicts_created_at", "verdicts", ["created_at"])
    op.create_index("ix_verdicts_anomalous_created_at", "verdicts", ["anomalous", "created_at"])
    with op.batch_alter_table("verdicts") as batch:
        batch.drop_column("product")
        batch.drop_column("camera_id")
    with op.batch_alter_table("frames") as batch:
        batch.drop_column("image_sha256")
