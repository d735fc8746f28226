"""Operator loop: stored heatmaps, review status, users, pool versions and pool change log.

Revision ID: op11_operator_loop
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "op11_operator_loop"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model's portable types: a revision never imports the live models.
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
UNREVIEWED = "anomalous AND reviewed_at IS NULL"
UNANNOUNCED = "announced_at IS NULL"


def upgrade() -> None:
    """Add the columns and tables of the review loop; seed pool versions from the entries."""
    with op.batch_alter_table("verdicts") as batch:
        batch.add_column(sa.Column("heatmap_png", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("heatmap_min", sa.Float(), nullable=True))
        batch.add_column(sa.Column("heatmap_max", sa.Float(), nullable=True))
        batch.add_column(sa.Column("review", sa.String(64), nullable=True))
        batch.add_column(sa.Column("reviewed_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("reviewed_at", TIMESTAMP, nullable=True))
    op.create_index("ix_verdicts_unreviewed", "verdicts", ["created_at", "id"],
                    postgresql_where=sa.text(UNREVIEWED), sqlite_where=sa.text(UNREVIEWED))

    with op.batch_alter_table("chat_messages") as batch:
        batch.add_column(sa.Column("author", sa.String(128), server_default="", nullable=False))

    op.create_table(
        "pool_versions",
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("product", name="pk_pool_versions"),
    )
    # The version the previous formula gave (newest entry id + removed entries), so that
    # running workers see the next change as newer than what they hold.
    op.execute(
        "INSERT INTO pool_versions (product, version) "
        "SELECT product, MAX(id) + SUM(CASE WHEN active THEN 0 ELSE 1 END) "
        "FROM pool_entries GROUP BY product"
    )

    op.create_table(
        "pool_changes",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("product", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("entry_id", BIGINT_PK, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("verdict_id", BIGINT_PK, nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("announced_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_pool_changes"),
        sa.ForeignKeyConstraint(["entry_id"], ["pool_entries.id"],
                                name="fk_pool_changes_entry_id_pool_entries", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["verdict_id"], ["verdicts.id"],
                                name="fk_pool_changes_verdict_id_verdicts", ondelete="SET NULL"),
        sa.UniqueConstraint("product", "version", name="uq_pool_changes_product_version"),
        sa.CheckConstraint("action IN ('add', 'remove', 'restore')", name="ck_pool_changes_action"),
    )
    op.create_index("ix_pool_changes_entry_id", "pool_changes", ["entry_id"])
    op.create_index("ix_pool_changes_unannounced", "pool_changes", ["id"],
                    postgresql_where=sa.text(UNANNOUNCED), sqlite_where=sa.text(UNANNOUNCED))

    op.create_table(
        "users",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_by", sa.String(128), server_default="", nullable=False),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("disabled_by", sa.String(128), nullable=True),
        sa.Column("disabled_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
        sa.CheckConstraint("role IN ('operator', 'engineer', 'admin')", name="ck_users_role"),
    )


def downgrade() -> None:
    """Drop what ``upgrade`` added."""
    op.drop_table("users")
    op.drop_index("ix_pool_changes_unannounced", table_name="pool_changes")
    op.drop_index("ix_pool_changes_entry_id", table_name="pool_changes")
    op.drop_table("pool_changes")
    op.drop_table("pool_versions")
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_column("author")
    op.drop_index("ix_verdicts_unreviewed", table_name="verdicts")
    with op.batch_alter_table("verdicts") as batch:
        for column in ("reviewed_at", "reviewed_by", "review", "heatmap_max",
                       "heatmap_min", "heatmap_png"):
            batch.drop_column(column)
