"""The job queue: rows in `jobs`, claimed atomically, held by a lease a heartbeat renews.

Every state change is one UPDATE guarded by the claim token (`worker`), so a worker that lost
its lease (it stalled and another took the job over) can never overwrite the job's outcome.

- claim: `UPDATE ... WHERE id = (SELECT ... LIMIT 1 FOR UPDATE SKIP LOCKED)` on PostgreSQL; the
  same single statement on SQLite, whose writers are serialised by the database lock.
- lease: a worker renews it every few seconds; a job whose lease ran out (worker killed) is
  put back in the queue, or failed once it used up its attempts (`reap`).
- parents: a cross-validation job fans out one job per fold, then waits (status running, no
  worker) until every child has ended, when any worker claims it again to merge the folds.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from app.db import rows_changed
from app.errors import Conflict, NotFound
from app.i18n import N_, Label
from app.jobs import messages
from app.tables import FINISHED, Job, JobStatus, User

ACTIVE = (JobStatus.queued, JobStatus.running)
LOG_TAIL_CHARS = 20_000


class LeaseLost(Exception):
    """The job is no longer held by this worker (its lease expired and was taken over)."""


def now() -> datetime:
    return datetime.now(UTC)


def claim_token() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(6)}"


# ---------------------------------------------------------------------------------------------
# Asked for by admins
# ---------------------------------------------------------------------------------------------
def enqueue(
    session: Session,
    kind: str,
    params: dict[str, Any],
    requested_by: User | None = None,
    parent_id: int | None = None,
    max_attempts: int = 3,
    commit: bool = True,
) -> Job:
    job = Job(
        kind=kind,
        params=params,
        status=JobStatus.queued,
        requested_by=requested_by.id if requested_by is not None else None,
        parent_id=parent_id,
        max_attempts=max_attempts,
        message=messages.QUEUED,
        progress=0.0,
        log="",
        attempts=0,
        cancel_requested=False,
    )
    session.add(job)
    if commit:
        session.commit()
    else:
        session.flush()
    return job


def get(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(N_("no job %(id)s"), id=job_id)
    return job


def list_jobs(session: Session, limit: int = 100, status: JobStatus | None = None) -> list[Job]:
    """Top-level jobs (a cross-validation's folds are listed under it), newest first."""
    query = select(Job).where(Job.parent_id.is_(None))
    if status is not None:
        query = query.where(Job.status == status)
    return list(session.scalars(query.order_by(Job.id.desc()).limit(limit)))


def children(session: Session, job_id: int) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.parent_id == job_id).order_by(Job.id)))


@dataclass(frozen=True)
class FoldProgress:
    """Where a cross-validation waiting for its fold jobs stands, read from the folds
    themselves (the parent's own message only says it is waiting)."""

    total: int
    done: int  # ended, however
    running: list[Job]  # each with its own message: the epoch, the batch, the stage
    mean: float  # 0-1, an ended fold counting as complete

    @property
    def summary(self) -> str:
        head = (
            f"{self.done} of {self.total} folds done, {len(self.running)} running, "
            f"{self.mean:.0%} overall"
        )
        doing = "; ".join(job.message for job in self.running if job.message)
        return f"{head}: {doing}" if doing else head


def fold_progress(job: Job, children: Sequence[Job]) -> FoldProgress | None:
    """A parent job's progress while its folds run; None for any other job, or once the
    folds have all ended (the parent then merges them and reports for itself)."""
    if job.finished or not children or all(child.finished for child in children):
        return None
    shares = [1.0 if child.finished else child.progress for child in children]
    return FoldProgress(
        total=len(children),
        done=sum(child.finished for child in children),
        running=[child for child in children if child.status == JobStatus.running],
        mean=sum(shares) / len(shares),
    )


def cancel(session: Session, job_id: int) -> Job:
    """Queued jobs (and a parent waiting for its folds) end at once; a running one stops at its
    next progress point. Cancelling a parent cancels its folds."""
    job = get(session, job_id)
    if job.finished:
        raise Conflict(
            N_("job %(id)s has already ended (%(status)s)"),
            id=job_id,
            status=Label(job.status.value),
        )
    stamp = now()
    for target in (job.id, *[c.id for c in children(session, job.id)]):
        # one statement each: never overwrites an outcome a worker wrote meanwhile
        session.execute(
            update(Job)
            .where(Job.id == target, Job.status.in_(ACTIVE), Job.worker.is_(None))
            .values(status=JobStatus.cancelled, finished_at=stamp, message=messages.CANCELLED)
        )
        session.execute(
            update(Job)
            .where(Job.id == target, Job.status == JobStatus.running, Job.worker.is_not(None))
            .values(cancel_requested=True, message=messages.CANCELLING)
        )
    session.commit()
    session.refresh(job)
    return job


# ---------------------------------------------------------------------------------------------
# Used by workers
# ---------------------------------------------------------------------------------------------
def reap(session: Session) -> int:
    """Jobs whose worker stopped renewing its lease: back to the queue, or failed when they
    used up their attempts. Returns how many were touched."""
    stamp = now()
    expired = and_(
        Job.status == JobStatus.running,
        Job.worker.is_not(None),
        Job.lease_expires_at < stamp,
    )
    cancelled = rows_changed(
        session,
        update(Job)
        .where(expired, Job.cancel_requested)
        .values(
            status=JobStatus.cancelled,
            finished_at=stamp,
            worker=None,
            lease_expires_at=None,
            message=messages.CANCELLED_WORKER_LOST,
        ),
    )
    failed = rows_changed(
        session,
        update(Job)
        .where(expired, Job.attempts >= Job.max_attempts)
        .values(
            status=JobStatus.failed,
            finished_at=stamp,
            worker=None,
            lease_expires_at=None,
            error="the worker stopped answering (lease expired) and no attempts are left",
            message=messages.FAILED_WORKER_LOST,
        ),
    )
    requeued = rows_changed(
        session,
        update(Job)
        .where(expired, Job.attempts < Job.max_attempts)
        .values(
            status=JobStatus.queued,
            worker=None,
            lease_expires_at=None,
            message=messages.REQUEUED_WORKER_LOST,
        ),
    )
    session.commit()
    return cancelled + failed + requeued


def claim(
    session: Session, token: str, lease_seconds: float, kinds: tuple[str, ...] = ()
) -> Job | None:
    """Takes the oldest runnable job for the worker `token`, atomically; None when idle."""
    candidate, child = aliased(Job, name="candidate"), aliased(Job, name="child")
    unfinished_children = exists().where(child.parent_id == candidate.id, child.status.in_(ACTIVE))
    runnable = or_(
        candidate.status == JobStatus.queued,
        and_(
            candidate.status == JobStatus.running,
            candidate.worker.is_(None),
            ~unfinished_children,
        ),
    )
    pick = select(candidate.id).where(runnable, ~candidate.cancel_requested)
    if kinds:
        pick = pick.where(candidate.kind.in_(kinds))
    pick = pick.order_by(candidate.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stamp = now()
    job_id = session.execute(
        update(Job)
        .where(Job.id == pick.scalar_subquery())
        .values(
            status=JobStatus.running,
            worker=token,
            # a parent claimed back to merge its folds does not use up an attempt
            attempts=case((Job.status == JobStatus.queued, Job.attempts + 1), else_=Job.attempts),
            started_at=func.coalesce(Job.started_at, stamp),
            heartbeat_at=stamp,
            lease_expires_at=stamp + timedelta(seconds=lease_seconds),
            message=messages.STARTED,
        )
        .returning(Job.id)
    ).scalar_one_or_none()
    session.commit()
    return session.get(Job, job_id, populate_existing=True) if job_id is not None else None


def _held(job_id: int, token: str):
    return and_(Job.id == job_id, Job.worker == token, Job.status == JobStatus.running)


def renew(session: Session, job_id: int, token: str, lease_seconds: float) -> bool:
    stamp = now()
    renewed = rows_changed(
        session,
        update(Job)
        .where(_held(job_id, token))
        .values(heartbeat_at=stamp, lease_expires_at=stamp + timedelta(seconds=lease_seconds)),
    )
    session.commit()
    return bool(renewed)


def report(
    session: Session,
    job: Job,
    token: str,
    lease_seconds: float,
    progress: float,
    message: str,
    log: str,
) -> bool:
    """Writes progress (and renews the lease); True when an admin asked to cancel."""
    stamp = now()
    cancel_requested = session.execute(
        update(Job)
        .where(_held(job.id, token))
        .values(
            progress=min(max(progress, 0.0), 1.0),
            message=message[:255],
            log=log[-LOG_TAIL_CHARS:],
            heartbeat_at=stamp,
            lease_expires_at=stamp + timedelta(seconds=lease_seconds),
        )
        .returning(Job.cancel_requested)
    ).scalar_one_or_none()
    if cancel_requested is None:
        session.rollback()
        raise LeaseLost(f"job {job.id} is no longer held by {token}")
    if job.parent_id is not None:  # the parent shows the mean progress of its folds
        child = aliased(Job)
        mean = select(func.avg(child.progress)).where(child.parent_id == job.parent_id)
        session.execute(
            update(Job)
            .where(Job.id == job.parent_id, Job.status == JobStatus.running)
            .values(progress=mean.scalar_subquery())
        )
    session.commit()
    return bool(cancel_requested)


def finish(
    session: Session,
    job_id: int,
    token: str,
    status: JobStatus,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    log: str | None = None,
    message: str = "",
    side_effects: Callable[[Session], None] | None = None,
) -> bool:
    """The final status, written with the job's side effects (a model registered, a report
    recorded) in one transaction: both happen, or neither. False when the lease was lost."""
    assert status in FINISHED
    values: dict[str, Any] = {
        "status": status,
        "finished_at": now(),
        "worker": None,
        "lease_expires_at": None,
        "message": (message or status.value)[:255],
        "result": result,
        "error": error,
    }
    if status == JobStatus.succeeded:
        values["progress"] = 1.0
    if log is not None:
        values["log"] = log[-LOG_TAIL_CHARS:]
    try:
        if side_effects is not None:
            side_effects(session)
        if not rows_changed(session, update(Job).where(_held(job_id, token)).values(**values)):
            session.rollback()
            return False
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return True


def release(session: Session, job_id: int, token: str, log: str | None = None) -> bool:
    """A worker stopping (SIGTERM) hands its job back; the attempt does not count."""
    values: dict[str, Any] = {
        "status": JobStatus.queued,
        "worker": None,
        "lease_expires_at": None,
        "attempts": Job.attempts - 1,
        "message": messages.REQUEUED_WORKER_STOPPED,
    }
    if log is not None:
        values["log"] = log[-LOG_TAIL_CHARS:]
    released = rows_changed(session, update(Job).where(_held(job_id, token)).values(**values))
    session.commit()
    return bool(released)


def wait_for_children(session: Session, job_id: int, token: str, message: str) -> bool:
    """The parent lets go of its lease; it is claimed again once every child has ended."""
    waiting = rows_changed(
        session,
        update(Job)
        .where(_held(job_id, token))
        .values(worker=None, lease_expires_at=None, message=message[:255]),
    )
    session.commit()
    return bool(waiting)


def counts_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return {status.value: n for status, n in rows}
