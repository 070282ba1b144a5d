"""Evaluation reports as pages (admins): the list, one report's tables, its figures and
files."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from app import report_compare, reports
from app.deps import Admin, SessionDep
from app.errors import AppError
from app.i18n import N_, gettext
from app.parsing import parse_int
from app.payloads import RowId
from app.web import render, render_error
from model import plots

router = APIRouter(prefix="/admin", tags=["admin"], include_in_schema=False)


@router.get("/reports", response_class=HTMLResponse)
def reports_page(request: Request, session: SessionDep, _: Admin) -> Response:
    context = {"reports": reports.list_reports(session)}
    return render(request, "reports.html", "reports.html", context)


ReportParam = Annotated[str, Query(max_length=20, description="an evaluation report's id")]


def _comparison(session, a: str, b: str) -> report_compare.Comparison:
    low, high = 1, 2**31 - 1
    a_id, b_id = parse_int(a, "a", low, high), parse_int(b, "b", low, high)
    return report_compare.compare_reports(session, a_id, b_id)


@router.get("/reports/compare", response_class=HTMLResponse)
def compare_page(
    request: Request, session: SessionDep, _: Admin, a: ReportParam = "", b: ReportParam = ""
) -> Response:
    """Two reports of one cohort and split: per field and method the median macro-F1 of each,
    b − a, and the paired per-fold figure (422 for other cohorts or folds, 404 for a missing
    report)."""
    try:
        comparison = _comparison(session, a, b)
    except AppError as e:
        return render_error(request, e, N_("Could not compare these reports."))
    context = {
        "c": comparison,
        "figure_url": f"/admin/reports/compare/figure?{urlencode({'a': a, 'b': b})}",
    }
    return render(request, "report_compare.html", "report_compare.html", context)


@router.get("/reports/compare/figure")
def compare_figure(
    request: Request, session: SessionDep, _: Admin, a: ReportParam = "", b: ReportParam = ""
) -> Response:
    """The paired per-fold figure of the comparison, as PNG."""
    try:
        c = _comparison(session, a, b)
    except AppError as e:
        return render_error(request, e, N_("Could not compare these reports."))
    title = gettext("%(method)s: macro-F1 per fold, #%(a)s → #%(b)s") % {
        "method": gettext(c.figure_method_name),
        "a": c.a.id,
        "b": c.b.id,
    }
    figure = plots.paired_folds_figure(
        c.per_fold, c.figure_method, (f"#{c.a.id}", f"#{c.b.id}"), title
    )
    return Response(plots.figure_png(figure), media_type="image/png")


@router.get("/reports/{report_id}", response_class=HTMLResponse)
def report_page(report_id: RowId, request: Request, session: SessionDep, _: Admin) -> Response:
    """The per-field table (the model's modes beside the baselines), the figures, the files."""
    try:
        row = reports.get_report(session, report_id)
    except AppError as e:
        action = gettext("Could not show report %(id)s.") % {"id": report_id}
        return render_error(request, e, action)
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
        return render_error(request, e, N_("Could not show this figure."))
    return FileResponse(path, media_type="image/png")


@router.get("/reports/{report_id}/files/{name}")
def report_file(
    report_id: RowId, name: str, request: Request, session: SessionDep, _: Admin
) -> Response:
    """metrics.csv, per_class.csv, retrieval.csv or summary.md of the report, as a download."""
    try:
        path, media_type = reports.download_path(reports.get_report(session, report_id), name)
    except AppError as e:
        return render_error(request, e, N_("Could not show this file."))
    return FileResponse(path, media_type=media_type, filename=f"report-{report_id}-{name}")
