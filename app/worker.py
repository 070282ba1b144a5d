"""`clipmed worker`: claims one job at a time and runs it, whatever happens writing its end.

A heartbeat thread renews the lease while the job runs, so a long step without progress
reports (building a catalog) keeps the job; a killed worker stops renewing and the job is
taken over. The job itself sees its worker through `JobContext`: progress, log, and the
checks that stop it at its next progress point (cancelled, lease lost, worker stopping).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app import jobs, logs
from app.config import Settings
from app.jobs import LeaseLost
from app.models import Job, JobStatus

log = logging.getLogger(__name__)

PROGRESS_EVERY = 1.0  # seconds between progress writes (training reports every batch)


class Cancelled(Exception):
    """An admin cancelled the job."""


class Stopping(Exception):
    """The worker was asked to stop (SIGTERM); the job goes back to the queue."""


@dataclass
class Outcome:
    """A job's success: its result, and what to write in the same transaction as its status."""

    result: dict[str, Any]
    side_effects: Callable[[Session], None] | None = None
    message: str = "succeeded"


@dataclass
class Waiting:
    """The job fanned out child jobs and is to be claimed again when they have all ended."""

    message: str


@dataclass
class JobContext:
    job: Job
    token: str
    settings: Settings
    sessions: sessionmaker[Session]
    stop: threading.Event
    lost: threading.Event = field(default_factory=threading.Event)
    _lines: deque[str] = field(default_factory=lambda: deque(maxlen=500))
    _last_write: float = 0.0

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.job.params)

    @property
    def log_text(self) -> str:
        return "\n".join(self._lines)

    def log(self, line: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        self._lines.append(f"{stamp} {line}")
        log.info("job %s: %s", self.job.id, line)

    def check(self) -> None:
        if self.stop.is_set():
            raise Stopping
        if self.lost.is_set():
            raise LeaseLost(f"job {self.job.id} lost its lease")

    def progress(self, fraction: float, message: str, force: bool = False) -> None:
        """Reports progress (at most once a second unless `force`) and stops the job here if it
        was cancelled, its lease was lost, or the worker is stopping."""
        self.check()
        if not force and time.monotonic() - self._last_write < PROGRESS_EVERY:
            return
        self._last_write = time.monotonic()
        with self.sessions() as session:
            cancel = jobs.report(
                session,
                self.job,
                self.token,
                self.settings.job_lease_seconds,
                fraction,
                message,
                self.log_text,
            )
        if cancel:
            raise Cancelled

    def work_dir(self, *parts: str) -> Path:
        assert self.settings.data_dir is not None
        folder = Path(self.settings.data_dir, "jobs", str(self.job.id), *parts)
        folder.mkdir(parents=True, exist_ok=True)
        return folder


Handler = Callable[[JobContext], Outcome | Waiting]


class Heartbeat:
    """Renews the lease every third of its length until stopped; sets `lost` if it can't."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.done = threading.Event()
        # In a copy of the context: its log lines carry the job id bound by Worker.execute.
        self.thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._run,), name=f"heartbeat-{ctx.job.id}"
        )

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join()

    def _run(self) -> None:
        lease = self.ctx.settings.job_lease_seconds
        while not self.done.wait(lease / 3):
            try:
                with self.ctx.sessions() as session:
                    held = jobs.renew(session, self.ctx.job.id, self.ctx.token, lease)
            except Exception:  # the database is away: keep trying until the lease runs out
                log.exception("job %s: could not renew the lease", self.ctx.job.id)
                continue
            if not held:
                log.warning("job %s: lease lost", self.ctx.job.id)
                self.ctx.lost.set()
                return


class Worker:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        handlers: dict[str, Handler] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        if handlers is None:
            from app.tasks import HANDLERS

            handlers = HANDLERS
        self.settings = settings
        self.sessions = sessions
        self.handlers = handlers
        self.stop = stop or threading.Event()
        self.base_token = jobs.claim_token()
        self.claims = 0

    def run(self, max_jobs: int | None = None) -> int:
        """Runs jobs until stopped (or `max_jobs` have run); returns how many ran."""
        ran = 0
        log.info("worker %s started", self.base_token)
        while not self.stop.is_set() and (max_jobs is None or ran < max_jobs):
            try:
                job, token = self.claim_next()
            except Exception:  # the database is away: wait and try again
                log.exception("worker %s: could not claim a job", self.base_token)
                self.stop.wait(self.settings.job_poll_seconds * 5)
                continue
            if job is None:
                self.stop.wait(self.settings.job_poll_seconds)
                continue
            self.execute(job, token)
            ran += 1
        log.info("worker %s stopped after %d job(s)", self.base_token, ran)
        return ran

    def claim_next(self) -> tuple[Job | None, str]:
        self.claims += 1
        token = f"{self.base_token}:{self.claims}"
        with self.sessions() as session:
            jobs.reap(session)
            job = jobs.claim(session, token, self.settings.job_lease_seconds, tuple(self.handlers))
        return job, token

    def execute(self, job: Job, token: str) -> None:
        with logs.bound(job_id=job.id):  # every line logged while the job runs names it
            ctx = JobContext(job, token, self.settings, self.sessions, self.stop)
            ctx.log(f"attempt {job.attempts} of {job.max_attempts} on {self.base_token}")
            with Heartbeat(ctx):
                self._execute(ctx)

    def _execute(self, ctx: JobContext) -> None:
        job, token = ctx.job, ctx.token
        with self.sessions() as session:
            try:
                outcome = self.handlers[job.kind](ctx)
            except Stopping:
                ctx.log("worker stopping: job handed back to the queue")
                jobs.release(session, job.id, token, ctx.log_text)
            except Cancelled:
                ctx.log("cancelled")
                jobs.finish(session, job.id, token, JobStatus.cancelled, log=ctx.log_text)
            except LeaseLost:
                ctx.log("lease lost: another worker holds the job now; nothing written")
            except Exception as e:
                self._fail(session, ctx, e)
            except BaseException:  # KeyboardInterrupt and the like: hand the job back
                jobs.release(session, job.id, token, ctx.log_text)
                raise
            else:
                self._record(session, ctx, outcome)

    @staticmethod
    def _fail(session: Session, ctx: JobContext, error: Exception) -> None:
        ctx.log(traceback.format_exc().rstrip())
        jobs.finish(
            session,
            ctx.job.id,
            ctx.token,
            JobStatus.failed,
            error=f"{type(error).__name__}: {error}",
            log=ctx.log_text,
            message=f"failed: {error}"[:255],
        )

    def _record(self, session: Session, ctx: JobContext, outcome: Outcome | Waiting) -> None:
        job, token = ctx.job, ctx.token
        if isinstance(outcome, Waiting):
            ctx.log(outcome.message)
            jobs.wait_for_children(session, job.id, token, outcome.message)
            return
        try:
            written = jobs.finish(
                session,
                job.id,
                token,
                JobStatus.succeeded,
                result=outcome.result,
                log=ctx.log_text,
                message=outcome.message,
                side_effects=outcome.side_effects,
            )
        except Exception as e:  # e.g. the new checkpoint does not load: not registered
            self._fail(session, ctx, e)
            return
        if not written:
            ctx.log("lease lost before the result was written; another worker holds the job")
