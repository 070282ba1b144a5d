"""Admin jobs over REST: start one (202), list, follow, cancel. Workers do the work."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app import audit
from app.deps import Admin, SessionDep, SettingsDep
from app.jobs import queue
from app.jobs.cohorts import check_cohort
from app.jobs.params import JobCreate
from app.payloads import JobOut, RowId
from app.problems import responses
from app.tables import JobStatus

router = APIRouter(prefix="/api/v1/admin/jobs", tags=["jobs"])

ERRORS = responses(401, 403, 404, 409, 422)


@router.post("", status_code=202, response_model=JobOut, responses=ERRORS)
def start_job(
    body: JobCreate, request: Request, session: SessionDep, settings: SettingsDep, caller: Admin
) -> JSONResponse:
    """Queue a train, evaluate or reindex job; a worker picks it up. Follow it at Location.
    An unknown cohort is refused (422, listing the available ones)."""
    check_cohort(settings.data_dir, body)
    job = queue.enqueue(session, body.kind, body.model_dump(), requested_by=caller.user)
    audit.record_request(request, "job.start", "success", target_type="job", target_id=str(job.id))
    out = JobOut.from_row(job)
    return JSONResponse(
        out.model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/api/v1/admin/jobs/{job.id}"},
    )


@router.get("", response_model=list[JobOut], responses=ERRORS)
def list_jobs(session: SessionDep, _: Admin, status: JobStatus | None = None) -> list[JobOut]:
    """Jobs, newest first (a cross-validation's fold jobs are listed inside it)."""
    return [
        JobOut.from_row(job, queue.children(session, job.id))
        for job in queue.list_jobs(session, status=status)
    ]


@router.get("/{job_id}", response_model=JobOut, responses=ERRORS)
def get_job(job_id: RowId, session: SessionDep, _: Admin) -> JobOut:
    """A job's status, progress, result, fold jobs and the tail of its log."""
    job = queue.get(session, job_id)
    return JobOut.from_row(job, queue.children(session, job.id), with_log=True)


@router.post("/{job_id}/cancel", response_model=JobOut, responses=ERRORS)
def cancel_job(job_id: RowId, request: Request, session: SessionDep, _: Admin) -> JobOut:
    """Queued jobs end at once; a running one stops at its next progress point."""
    job = queue.cancel(session, job_id)
    audit.record_request(request, "job.cancel", "success", target_type="job", target_id=str(job_id))
    return JobOut.from_row(job, queue.children(session, job.id), with_log=True)
