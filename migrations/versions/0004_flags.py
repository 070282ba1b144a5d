"""flags on explanations and their review

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("explanation_id", sa.String(length=36), nullable=False),
        sa.Column("target", sa.String(length=8), nullable=False),
        sa.Column("field", sa.String(length=64), nullable=True),
        sa.Column("text_rank", sa.Integer(), nullable=True),
        sa.Column("text", sa.String(length=2000), nullable=True),
        sa.Column(
            "reason",
            sa.Enum(
                "wrong_value",
                "not_visible",
                "ambiguous",
                "other",
                name="flag_reason",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("corrected_value", sa.String(length=255), nullable=True),
        sa.Column("comment", sa.String(length=2000), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("catalog_version", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "open", "accepted", "rejected", name="flag_status", native_enum=False, length=16
            ),
            nullable=False,
        ),
        sa.Column("reviewed_by", sa.Integer(), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_note", sa.String(length=2000), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_flags_created_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["explanation_id"],
            ["explanations.id"],
            name=op.f("fk_flags_explanation_id_explanations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reviewed_by"], ["users.id"], name=op.f("fk_flags_reviewed_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flags")),
    )
    op.create_index(op.f("ix_flags_explanation_id"), "flags", ["explanation_id"], unique=False)
    op.create_index(op.f("ix_flags_field"), "flags", ["field"], unique=False)
    op.create_index(op.f("ix_flags_model_version"), "flags", ["model_version"], unique=False)
    op.create_index(op.f("ix_flags_status"), "flags", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_flags_status"), table_name="flags")
    op.drop_index(op.f("ix_flags_model_version"), table_name="flags")
    op.drop_index(op.f("ix_flags_field"), table_name="flags")
    op.drop_index(op.f("ix_flags_explanation_id"), table_name="flags")
    op.drop_table("flags")
