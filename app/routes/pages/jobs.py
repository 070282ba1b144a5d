"""Admin jobs as pages: the list with a start form, one job with its live progress and log, and
cancelling. The JSON API (`app.routes.api.jobs`) does the same for scripts; workers do the work.

A running job's progress is a fragment that asks for itself again every second and, once the
job has ended, comes back without the trigger, so the page stops polling by itself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app import audit, reports
from app.config import Settings
from app.deps import Admin, SessionDep, SettingsDep
from app.errors import AppError, InvalidInput
from app.i18n import gettext
from app.jobs import queue
from app.jobs.cohorts import available_cohorts, check_cohort
from app.jobs.form import JobForm, job_params, split_traceback, usernames
from app.payloads import RowId
from app.web import render, render_error

router = APIRouter(
    prefix="/admin/jobs",
    tags=["admin"],
    include_in_schema=False,
    default_response_class=HTMLResponse,
)

FormText = Annotated[str, Form(max_length=255)]
Checkbox = Annotated[str | None, Form(max_length=8)]  # present ("on") when ticked


def _list_context(
    session: Session, settings: Settings, form: JobForm, error: InvalidInput | None = None
) -> dict:
    rows = queue.list_jobs(session)
    return {
        "cohorts": available_cohorts(settings.data_dir),
        "jobs": rows,
        "users": usernames(session, rows),
        # the table refreshes itself while anything in it can still change
        "active": any(not job.finished for job in rows),
        "form": form,
        "error": error,
    }


def _job_context(session: Session, job_id: int) -> dict:
    job = queue.get(session, job_id)
    children = queue.children(session, job.id)
    log, traceback = split_traceback(job.log)
    return {
        "job": job,
        "log": log,
        "traceback": traceback,
        "children": children,
        "folds": queue.fold_progress(job, children),
        "parent": queue.get(session, job.parent_id) if job.parent_id is not None else None,
        "users": usernames(session, [job]),
        "report": reports.report_for_job(session, job.id),
    }


@router.get("")
def jobs_page(request: Request, session: SessionDep, settings: SettingsDep, _: Admin) -> Response:
    """The jobs, newest first; htmx gets the table alone (it polls it while jobs run)."""
    context = _list_context(session, settings, JobForm())
    return render(request, "jobs.html", "_jobs_table.html", context)


@router.post("")
def start_job(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: Admin,
    kind: FormText = "",
    cohort: FormText = "",
    preset: FormText = "",
    folds: FormText = "",
    epochs: FormText = "",
    activate: Checkbox = None,
    include_corrections: Checkbox = None,
) -> Response:
    """The start form's target: the JSON API's validation, then the new job's page (303)."""
    form = JobForm(
        kind=kind,
        cohort=cohort,
        preset=preset,
        folds=folds,
        epochs=epochs,
        activate=activate is not None,
        include_corrections=include_corrections is not None,
    )
    try:
        params = job_params(form)
        check_cohort(settings.data_dir, params)
    except InvalidInput as e:
        context = _list_context(session, settings, form, e)
        return render(request, "jobs.html", "_job_form.html", context, e.status_code)
    job = queue.enqueue(session, params.kind, params.model_dump(), requested_by=caller.user)
    audit.record_request(request, "job.start", "success", target_type="job", target_id=str(job.id))
    return RedirectResponse(f"/admin/jobs/{job.id}", status_code=303)


@router.get("/{job_id}")
@router.get("/{job_id}/progress")
def job_page(job_id: RowId, request: Request, session: SessionDep, _: Admin) -> Response:
    """Parameters, status, fold jobs, result and log. htmx gets the live part alone (progress,
    folds, log), which polls `/progress` while the job runs; one view, two URLs."""
    try:
        context = _job_context(session, job_id)
    except AppError as e:
        return render_error(request, e, gettext("Could not show job %(id)s.") % {"id": job_id})
    return render(request, "job.html", "_job_live.html", context)


@router.post("/{job_id}/cancel")
def cancel_job(job_id: RowId, request: Request, session: SessionDep, _: Admin) -> Response:
    """Queued jobs end at once, a running one at its next progress point; 409 once ended."""
    try:
        queue.cancel(session, job_id)
    except AppError as e:
        action = gettext("Could not cancel job %(id)s.") % {"id": job_id}
        return render_error(request, e, action)
    audit.record_request(request, "job.cancel", "success", target_type="job", target_id=str(job_id))
    return RedirectResponse(f"/admin/jobs/{job_id}", status_code=303)
