"""explanations from segmentations: input kind, feature extractor, outline, DICOM SEG reference,
optional case identity

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("explanations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("input_kind", sa.String(length=16), nullable=False, server_default="features")
        )
        batch_op.add_column(sa.Column("feature_extractor", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("outline", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("segmentation", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("study_instance_uid", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("series_instance_uid", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("nodule_label", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("patient_pseudonym", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_explanations_study_instance_uid"), ["study_instance_uid"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_explanations_patient_pseudonym"), ["patient_pseudonym"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("explanations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_explanations_patient_pseudonym"))
        batch_op.drop_index(batch_op.f("ix_explanations_study_instance_uid"))
        for column in (
            "patient_pseudonym",
            "nodule_label",
            "series_instance_uid",
            "study_instance_uid",
            "segmentation",
            "outline",
            "feature_extractor",
            "input_kind",
        ):
            batch_op.drop_column(column)
