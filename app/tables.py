"""ORM tables: the model registry and its history, stored explanations, accounts, flags, jobs
and evaluation reports."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    false,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.i18n import N_
from app.roles import Role  # noqa: F401  (its own module: the CLI names roles without SQLAlchemy)

# The roles as pages name them (`|tr`); marked here, not in app.roles, which the CLI imports.
ROLE_LABELS = (N_("clinician"), N_("radiologist"), N_("admin"))


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
    # The train job that made it; null for checkpoints registered from a folder.
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), default=None
    )

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
    # Who asked for it; clinicians see only their own. Null for rows made before accounts.
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True, default=None
    )
    # What was uploaded: "features" (a feature file), "contours" (contours JSON), "mask"
    # (.npy/.npz mask volume), "nifti" or "dicom-seg"; and, for segmentations, the extractor
    # ("name/version") that computed the features on the server.
    input_kind: Mapped[str] = mapped_column(
        String(16), default="features", server_default="features"
    )
    feature_extractor: Mapped[str | None] = mapped_column(String(64), default=None)
    # The nodule's outline per slice in mm (model.outline.NoduleOutline.to_json), for drawing.
    outline: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Where the input was a DICOM SEG: what a DICOM SR needs to reference it (UIDs, segment).
    segmentation: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Optional case identity, given on upload (validated formats, never required).
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    series_instance_uid: Mapped[str | None] = mapped_column(String(64), default=None)
    nodule_label: Mapped[str | None] = mapped_column(String(64), default=None)
    patient_pseudonym: Mapped[str | None] = mapped_column(String(64), index=True, default=None)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(
        Enum(Role, name="user_role", native_enum=False, length=16, validate_strings=True)
    )
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    """A personal bearer token; only its SHA-256 is stored (the token itself is random)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class WebSession(Base):
    """A browser login; the cookie carries only the random id, stored here as its SHA-256."""

    __tablename__ = "web_sessions"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditEvent(Base):
    """Append-only: the application only inserts; the database refuses UPDATE and DELETE."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # On PostgreSQL the database sets it on insert, whatever the client sends (migration 0008).
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    # No foreign key: the trail outlives the accounts it names.
    actor_id: Mapped[int | None] = mapped_column(Integer, default=None)
    actor: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str | None] = mapped_column(String(32), default=None)
    target_id: Mapped[str | None] = mapped_column(String(255), default=None)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    outcome: Mapped[str] = mapped_column(String(32))
    model_version: Mapped[str | None] = mapped_column(String(64), default=None)


class FlagReason(enum.StrEnum):
    wrong_value = "wrong_value"
    not_visible = "not_visible"
    ambiguous = "ambiguous"
    other = "other"


class FlagStatus(enum.StrEnum):
    open = "open"
    accepted = "accepted"
    rejected = "rejected"


# Reasons and statuses as pages name them (`|tr`; a reason's underscores shown as spaces).
FLAG_LABELS: tuple[str, ...] = (N_("wrong value"), N_("not visible"), N_("ambiguous"))
FLAG_LABELS += (N_("other"), N_("open"), N_("accepted"), N_("rejected"))


class Flag(Base):
    """A radiologist's objection to one field or one retrieved text of an explanation."""

    __tablename__ = "flags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    explanation_id: Mapped[str] = mapped_column(
        ForeignKey("explanations.id", ondelete="CASCADE"), index=True
    )
    # "field" (then `field` names it) or "text" (then `text_rank` and the flagged `text`).
    target: Mapped[str] = mapped_column(String(8))
    field: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    text_rank: Mapped[int | None] = mapped_column(Integer, default=None)
    text: Mapped[str | None] = mapped_column(String(2000), default=None)
    reason: Mapped[FlagReason] = mapped_column(
        Enum(FlagReason, name="flag_reason", native_enum=False, length=16)
    )
    corrected_value: Mapped[str | None] = mapped_column(String(255), default=None)
    comment: Mapped[str] = mapped_column(String(2000), default="")
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    catalog_version: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    status: Mapped[FlagStatus] = mapped_column(
        Enum(FlagStatus, name="flag_status", native_enum=False, length=16),
        default=FlagStatus.open,
        index=True,
    )
    reviewed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), default=None)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    review_note: Mapped[str] = mapped_column(String(2000), default="")


class ModelEvent(Base):
    """The registry's history: every activation (rollback is an activation of an older
    version) and every catalog swap, with who and when."""

    __tablename__ = "model_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(16))  # "activate" or "reindex"
    version: Mapped[str] = mapped_column(String(64))
    catalog_version: Mapped[str] = mapped_column(String(64))
    previous_version: Mapped[str | None] = mapped_column(String(64), default=None)
    previous_catalog_version: Mapped[str | None] = mapped_column(String(64), default=None)
    actor_id: Mapped[int | None] = mapped_column(Integer, default=None)
    actor: Mapped[str | None] = mapped_column(String(64), default=None)
    job_id: Mapped[int | None] = mapped_column(Integer, default=None)


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"  # claimed by a worker, or (worker null) waiting for its child jobs
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINISHED = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class Job(Base):
    """Admin work run by `clipmed worker`: claimed atomically, kept alive by a lease."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[JobStatus] = mapped_column(
        Enum(JobStatus, name="job_status", native_enum=False, length=16),
        default=JobStatus.queued,
        index=True,
    )
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(String(255), default="")
    log: Mapped[str] = mapped_column(Text, default="")  # the tail only
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    requested_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    # A cross-validation job's folds are its children; it merges them when all have ended.
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), default=None, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)
    # The claim token of the worker holding the lease: "<host>:<pid>:<random>".
    worker: Mapped[str | None] = mapped_column(String(128), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=false())

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class EvaluationReport(Base):
    """A cross-validation report folder and the configuration it evaluated."""

    __tablename__ = "evaluation_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), default=None
    )
    cohort: Mapped[str] = mapped_column(String(255))
    simulated: Mapped[bool] = mapped_column(default=False)
    preset: Mapped[str] = mapped_column(String(64))
    folds: Mapped[int] = mapped_column(Integer)
    model_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    train_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    # field -> method -> median macro-F1 across folds
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    path: Mapped[str] = mapped_column(String(1024))


class LoginAttempt(Base):
    """A failed login, kept for the throttle's window (app.throttle): in the database, so every
    replica counts the same failures and a restart forgets none."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_address_username_at", "address", "username", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    username: Mapped[str] = mapped_column(String(64))  # as typed (an unknown name counts too)
    address: Mapped[str] = mapped_column(String(64))  # the client's, as app.throttle says


class LoginForm(Base):
    """A login form handed out (pre-session): its cookie carries a random id, stored here as
    its SHA-256 beside the form's CSRF token. The token is checked against this row, not
    against the cookie, so a cookie planted by another site or subdomain proves nothing; one
    use each, and short-lived."""

    __tablename__ = "login_forms"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
