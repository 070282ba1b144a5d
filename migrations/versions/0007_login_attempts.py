"""failed logins in the database, for the per-(username, address) and per-address throttle;
login forms handed out (pre-sessions), for the login CSRF check

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempts")),
    )
    op.create_index(op.f("ix_login_attempts_at"), "login_attempts", ["at"], unique=False)
    op.create_index(
        "ix_login_attempts_address_username_at",
        "login_attempts",
        ["address", "username", "at"],
        unique=False,
    )
    op.create_table(
        "login_forms",
        sa.Column("id_sha256", sa.String(length=64), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id_sha256", name=op.f("pk_login_forms")),
    )
    op.create_index(op.f("ix_login_forms_expires_at"), "login_forms", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_login_forms_expires_at"), table_name="login_forms")
    op.drop_table("login_forms")
    op.drop_index("ix_login_attempts_address_username_at", table_name="login_attempts")
    op.drop_index(op.f("ix_login_attempts_at"), table_name="login_attempts")
    op.drop_table("login_attempts")
