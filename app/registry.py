"""The model registry: checkpoint folders registered by version, exactly one of them active,
and the history of every switch (activation, rollback, catalog swap)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from app import audit
from app.errors import CheckpointRejected, Conflict, NotFound
from app.i18n import N_
from app.serving import Serving, ServingState, load_checkpoint
from app.tables import AuditEvent, ModelEvent, ModelVersion, User


def list_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc())))


def get_version(session: Session, version: str) -> ModelVersion:
    row = session.scalar(select(ModelVersion).where(ModelVersion.version == version))
    if row is None:
        raise NotFound(N_("no registered model version %(version)s"), version=repr(version))
    return row


def field_values(session: Session, version: str) -> dict[str, dict[str, str]]:
    """{field: {code: human label}} from the registered schema of `version` ({} when unknown)."""
    schema = session.scalar(select(ModelVersion.schema_).where(ModelVersion.version == version))
    if not schema:
        return {}
    return {
        f["name"]: dict(zip(f["values"], f["value_labels"], strict=True))
        for f in schema.get("fields", [])
    }


def get_active(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.is_active))


def is_empty(session: Session) -> bool:
    return session.scalar(select(ModelVersion.id).limit(1)) is None


def register_checkpoint(
    session: Session, folder: Path, job_id: int | None = None, commit: bool = True
) -> ModelVersion:
    """Registers a checkpoint folder after loading it; registering the same folder again is a
    no-op. The new version is not activated."""
    folder = Path(folder).resolve()
    if folder.name.startswith("."):
        # Checkpoint.save writes into a hidden sibling and renames it into place: a hidden
        # folder is a save in progress or an interrupted one, and may be renamed away.
        raise CheckpointRejected(f"{folder} is an unfinished checkpoint save, not a checkpoint")
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
        job_id=job_id,
    )
    session.add(row)
    if commit:
        session.commit()
    else:
        session.flush()
    return row


def load_serving(row: ModelVersion) -> Serving:
    """Builds the Serving of a registered version, checking the folder still holds it."""
    started = time.perf_counter()
    ckpt = load_checkpoint(Path(row.path))
    if (ckpt.version, ckpt.catalog.version) != (row.version, row.catalog_version):
        raise CheckpointRejected(
            f"{row.path} now holds model {ckpt.version} with catalog {ckpt.catalog.version}, "
            f"but it was registered as model {row.version} with catalog {row.catalog_version}"
        )
    serving = Serving.from_checkpoint(ckpt, row.path)
    return dataclasses.replace(serving, load_seconds=time.perf_counter() - started)


def set_active(
    session: Session, row: ModelVersion, actor: User | None = None, job_id: int | None = None
) -> None:
    """Marks `row` the only active version and records the switch; the caller commits."""
    previous = get_active(session)
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.is_active, ModelVersion.id != row.id)
        .values(is_active=False)
    )
    session.execute(update(ModelVersion).where(ModelVersion.id == row.id).values(is_active=True))
    session.add(
        ModelEvent(
            action="activate",
            version=row.version,
            catalog_version=row.catalog_version,
            previous_version=previous.version if previous is not None else None,
            previous_catalog_version=previous.catalog_version if previous is not None else None,
            actor_id=actor.id if actor is not None else None,
            actor=actor.username if actor is not None else None,
            job_id=job_id,
        )
    )


def activate_version(
    session: Session,
    version: str,
    state: ServingState | None = None,
    actor: User | None = None,
    audit_event: AuditEvent | None = None,
) -> ModelVersion:
    """Makes `version` the only active one (rolling back is activating an older version);
    with `state`, this process serves it from now on.

    The checkpoint is loaded before anything changes, so a version that fails to load leaves
    the registry and the served model as they were.
    """
    row = get_version(session, version)
    serving = load_serving(row) if state is not None else None
    lock = state.lock if state is not None else None
    if lock is not None:
        lock.acquire()
    try:
        set_active(session, row, actor)
        if audit_event is not None:
            session.add(audit_event)
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
    return row


async def activate_for_request(
    request: Request, session: Session, version: str, state: ServingState, caller: User
) -> ModelVersion:
    """Model activation as the API and the models page both ask for it: `activate_version`
    off the event loop (it loads the checkpoint), audited as this request's event."""
    return await run_in_threadpool(
        activate_version, session, version, state, caller, audit.model_activated(request, version)
    )


def swap_catalog(
    session: Session, version: str, expected_path: str, folder: Path, job_id: int | None
) -> ModelVersion:
    """Points `version` at a folder holding the same weights with a rebuilt catalog and case
    index; the caller commits. Refused when the version moved since the rebuild started."""
    row = get_version(session, version)
    ckpt = load_checkpoint(Path(folder))
    if ckpt.version != version:
        raise CheckpointRejected(f"{folder} holds model {ckpt.version}, not {version}")
    if row.path != expected_path:
        raise Conflict(
            f"model {version} moved to {row.path} while its catalog was rebuilt from "
            f"{expected_path}; run the re-index again"
        )
    session.add(
        ModelEvent(
            action="reindex",
            version=version,
            catalog_version=ckpt.catalog.version,
            previous_version=version,
            previous_catalog_version=row.catalog_version,
            job_id=job_id,
        )
    )
    row.path = str(Path(folder).resolve())
    row.catalog_version = ckpt.catalog.version
    session.flush()
    return row


def history(session: Session, limit: int = 100) -> list[ModelEvent]:
    return list(session.scalars(select(ModelEvent).order_by(ModelEvent.id.desc()).limit(limit)))


def load_active(session: Session, state: ServingState) -> Serving | None:
    """At start-up: serve the active version, if there is one."""
    row = get_active(session)
    serving = load_serving(row) if row is not None else None
    with state.lock:
        state.replace(serving)
    return serving


def sync_active(session: Session, state: ServingState) -> bool:
    """Serves what the registry says is active when another process (a worker, another
    replica) changed it; True when the served model changed.

    Read and swap happen under the state's lock, so an activation made by this process
    meanwhile is never undone by an older reading.
    """
    with state.lock:
        row = get_active(session)
        current = state.current
        wanted = (row.version, row.catalog_version, row.path) if row is not None else None
        served = (
            (current.model_version, current.catalog_version, current.source) if current else None
        )
        if wanted == served:
            return False
        state.replace(load_serving(row) if row is not None else None)
        return True
