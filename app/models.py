"""ORM tables: the model registry and stored explanations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, LargeBinary, String, false, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


class ModelVersion(Base):
    """A registered checkpoint folder; exactly one row is active once any is registered."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(String(1024))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    schema_: Mapped[dict[str, Any]] = mapped_column("schema", JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    catalog_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    is_active: Mapped[bool] = mapped_column(default=False, server_default=false())

    __table_args__ = (
        # At most one active row, enforced by the database too (both support partial indexes).
        Index(
            "uq_model_versions_one_active",
            "is_active",
            unique=True,
            sqlite_where=text("is_active"),
            postgresql_where=text("is_active"),
        ),
    )


class Explanation(Base):
    """One explained case: the validated input (as .npy bytes) and the result as served."""

    __tablename__ = "explanations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    input_sha256: Mapped[str] = mapped_column(String(64), index=True)
    n_slices: Mapped[int] = mapped_column(Integer)
    k: Mapped[int] = mapped_column(Integer)
    model_version: Mapped[str] = mapped_column(String(64))
    catalog_version: Mapped[str] = mapped_column(String(64))
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    features_npy: Mapped[bytes] = mapped_column(LargeBinary)
