"""Evaluation reports as pages (admins): the list, one report's tables, its figures and
files."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from app import reports
from app.deps import Admin, SessionDep
from app.errors import AppError
from app.payloads import RowId
from app.web import render, render_error

router = APIRouter(prefix="/admin", tags=["admin"], include_in_schema=False)


@router.get("/reports", response_class=HTMLResponse)
def reports_page(request: Request, session: SessionDep, _: Admin) -> Response:
    context = {"reports": reports.list_reports(session)}
    return render(request, "reports.html", "reports.html", context)


@router.get("/reports/{report_id}", response_class=HTMLResponse)
def report_page(report_id: RowId, request: Request, session: SessionDep, _: Admin) -> Response:
    """The per-field table (the model's modes beside the baselines), the figures, the files."""
    try:
        row = reports.get_report(session, report_id)
    except AppError as e:
        return render_error(request, e, f"Could not show report {report_id}.")
    context = {
        "report": row,
        "table": reports.summary_table(row.summary),
        "method_name": reports.method_name,
        "figure_groups": reports.figure_groups(row),
        "downloads": reports.download_names(row),
    }
    return render(request, "report.html", "report.html", context)


@router.get("/reports/{report_id}/figures/{name}")
def report_figure(
    report_id: RowId, name: str, request: Request, session: SessionDep, _: Admin
) -> Response:
    """One PNG of the report's figures folder, by a name that folder holds."""
    try:
        path = reports.figure_path(reports.get_report(session, report_id), name)
    except AppError as e:
        return render_error(request, e, "Could not show this figure.")
    return FileResponse(path, media_type="image/png")


@router.get("/reports/{report_id}/files/{name}")
def report_file(
    report_id: RowId, name: str, request: Request, session: SessionDep, _: Admin
) -> Response:
    """metrics.csv, per_class.csv, retrieval.csv or summary.md of the report, as a download."""
    try:
        path, media_type = reports.download_path(reports.get_report(session, report_id), name)
    except AppError as e:
        return render_error(request, e, "Could not show this file.")
    return FileResponse(path, media_type=media_type, filename=f"report-{report_id}-{name}")
