"""The model registry: checkpoint folders registered by version, exactly one of them active."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.errors import CheckpointRejected, NotFound
from app.models import ModelVersion
from app.serving import Serving, ServingState, load_checkpoint


def list_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc())))


def get_version(session: Session, version: str) -> ModelVersion:
    row = session.scalar(select(ModelVersion).where(ModelVersion.version == version))
    if row is None:
        raise NotFound(f"no registered model version {version!r}")
    return row


def get_active(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.is_active))


def is_empty(session: Session) -> bool:
    return session.scalar(select(ModelVersion.id).limit(1)) is None


def register_checkpoint(session: Session, folder: Path) -> ModelVersion:
    """Registers a checkpoint folder after loading it; registering the same folder again is a
    no-op. The new version is not activated."""
    folder = Path(folder).resolve()
    ckpt = load_checkpoint(folder)
    existing = session.scalar(select(ModelVersion).where(ModelVersion.version == ckpt.version))
    if existing is not None:
        if existing.path != str(folder):
            raise CheckpointRejected(
                f"model version {ckpt.version} is already registered from {existing.path}"
            )
        return existing
    row = ModelVersion(
        version=ckpt.version,
        path=str(folder),
        config=ckpt.meta["model_config"],
        schema_=ckpt.meta["schema"],
        metrics=ckpt.meta.get("metrics") or {},
        catalog_version=ckpt.catalog.version,
    )
    session.add(row)
    session.commit()
    return row


def load_serving(row: ModelVersion) -> Serving:
    """Builds the Serving of a registered version, checking the folder still holds it."""
    ckpt = load_checkpoint(Path(row.path))
    if (ckpt.version, ckpt.catalog.version) != (row.version, row.catalog_version):
        raise CheckpointRejected(
            f"{row.path} now holds model {ckpt.version} with catalog {ckpt.catalog.version}, "
            f"but it was registered as model {row.version} with catalog {row.catalog_version}"
        )
    return Serving.from_checkpoint(ckpt)


def activate_version(session: Session, version: str, state: ServingState | None = None) -> None:
    """Makes `version` the only active one; with `state`, the process serves it from now on.

    The checkpoint is loaded before anything changes, so a version that fails to load leaves
    the registry and the served model as they were.
    """
    row = get_version(session, version)
    serving = load_serving(row) if state is not None else None
    lock = state.lock if state is not None else None
    if lock is not None:
        lock.acquire()
    try:
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.is_active, ModelVersion.id != row.id)
            .values(is_active=False)
        )
        session.execute(
            update(ModelVersion).where(ModelVersion.id == row.id).values(is_active=True)
        )
        session.commit()
        if state is not None:
            state.replace(serving)
    except BaseException:
        session.rollback()
        raise
    finally:
        if lock is not None:
            lock.release()
    session.refresh(row)


def load_active(session: Session, state: ServingState) -> Serving | None:
    """At start-up: serve the active version, if there is one."""
    row = get_active(session)
    serving = load_serving(row) if row is not None else None
    with state.lock:
        state.replace(serving)
    return serving
