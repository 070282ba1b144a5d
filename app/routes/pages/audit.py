"""The audit trail page (admins) and its CSV export, with the same filters."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from app import audit
from app.deps import Admin, SessionDep
from app.web import render

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
