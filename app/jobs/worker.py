"""`clipmed worker`: claims one job at a time and runs it, whatever happens writing its end.

A heartbeat thread renews the lease while the job runs, so a long step without progress
reports (building a catalog) keeps the job; a killed worker stops renewing and the job is
taken over. The job itself sees its worker through `app.jobs.context.JobContext`. The worker
is given its handlers (`clipmed worker` passes `app.jobs.tasks.HANDLERS`).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import traceback

from sqlalchemy.orm import Session, sessionmaker

from app import logs
from app.config import Settings
from app.jobs import messages, queue
from app.jobs.context import Cancelled, Handler, JobContext, Outcome, Stopping, Waiting
from app.jobs.queue import LeaseLost
from app.tables import Job, JobStatus

log = logging.getLogger(__name__)


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
                    held = queue.renew(session, self.ctx.job.id, self.ctx.token, lease)
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
        handlers: dict[str, Handler],
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.handlers = handlers
        self.stop = stop or threading.Event()
        self.base_token = queue.claim_token()
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
            queue.reap(session)
            job = queue.claim(session, token, self.settings.job_lease_seconds, tuple(self.handlers))
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
                queue.release(session, job.id, token, ctx.log_text)
            except Cancelled:
                ctx.log("cancelled")
                queue.finish(session, job.id, token, JobStatus.cancelled, log=ctx.log_text)
            except LeaseLost:
                ctx.log("lease lost: another worker holds the job now; nothing written")
            except Exception as e:
                self._fail(session, ctx, e)
            except BaseException:  # KeyboardInterrupt and the like: hand the job back
                queue.release(session, job.id, token, ctx.log_text)
                raise
            else:
                self._record(session, ctx, outcome)

    @staticmethod
    def _fail(session: Session, ctx: JobContext, error: Exception) -> None:
        ctx.log(traceback.format_exc().rstrip())
        queue.finish(
            session,
            ctx.job.id,
            ctx.token,
            JobStatus.failed,
            error=f"{type(error).__name__}: {error}",
            log=ctx.log_text,
            message=(messages.FAILED % {"error": error})[:255],
        )

    def _record(self, session: Session, ctx: JobContext, outcome: Outcome | Waiting) -> None:
        job, token = ctx.job, ctx.token
        if isinstance(outcome, Waiting):
            ctx.log(outcome.message)
            queue.wait_for_children(session, job.id, token, outcome.message)
            return
        try:
            written = queue.finish(
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
