"""Admin screens: the audit trail and its CSV export, model activation from the models page,
and evaluation reports with their figures and files."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app import audit, registry, report_compare, reports
from app.deps import Admin, ServingStateDep, SessionDep
from app.errors import AppError
from app.parsing import parse_int
from app.schemas import RowId
from app.web import render, render_error
from model import plots

router = APIRouter(prefix="/admin", tags=["admin"], include_in_schema=False)

FilterParam = Annotated[str | None, Query(max_length=64)]


def audit_filters(
    action: FilterParam = None, actor: FilterParam = None, outcome: FilterParam = None
) -> dict[str, str | None]:
    """The audit page's filters, taken the same by its CSV export."""
    return {"action": action, "actor": actor, "outcome": outcome}


AuditFilters = Annotated[dict[str, str | None], Depends(audit_filters)]


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, session: SessionDep, _: Admin, filters: AuditFilters) -> Response:
    events = audit.search(session, **filters)
    # the export link lives in the swapped fragment, so it follows every htmx filter change
    export = "/admin/audit.csv?" + urlencode({k: v for k, v in filters.items() if v})
    context = {"events": events, "filters": filters, "export_url": export.rstrip("?")}
    return render(request, "audit.html", "_audit.html", context)


@router.get("/audit.csv")
def audit_csv(session: SessionDep, _: Admin, filters: AuditFilters) -> Response:
    events = audit.search(session, **filters, limit=100_000)
    return Response(
        audit.to_csv(events),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
    )


# --- models -----------------------------------------------------------------------------------
@router.post("/models/{version}/activate", response_class=HTMLResponse)
async def activate_model(
    version: str, request: Request, session: SessionDep, state: ServingStateDep, caller: Admin
) -> Response:
    """The models page's Activate / Roll back buttons: serve `version` from now on."""
    try:
        await run_in_threadpool(
            registry.activate_version,
            session,
            version,
            state,
            caller.user,
            audit.model_activated(request, version),
        )
    except AppError as e:
        return render_error(request, e, f"Could not activate model {version}")
    # the models page says what happened (only while it is still true: see `models_page`)
    return RedirectResponse(f"/models?{urlencode({'activated': version})}", status_code=303)


# --- evaluation reports -----------------------------------------------------------------------
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
        return render_error(request, e, "Could not compare these reports")
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
        return render_error(request, e, "Could not compare these reports")
    title = f"{c.figure_method_name}: macro-F1 per fold, #{c.a.id} → #{c.b.id}"
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
        return render_error(request, e, f"Could not show report {report_id}")
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
        return render_error(request, e, "No such figure")
    return FileResponse(path, media_type="image/png")


@router.get("/reports/{report_id}/files/{name}")
def report_file(
    report_id: RowId, name: str, request: Request, session: SessionDep, _: Admin
) -> Response:
    """metrics.csv, per_class.csv, retrieval.csv or summary.md of the report, as a download."""
    try:
        path, media_type = reports.download_path(reports.get_report(session, report_id), name)
    except AppError as e:
        return render_error(request, e, "No such file")
    return FileResponse(path, media_type=media_type, filename=f"report-{report_id}-{name}")
