"""Admin screens: the audit trail, filtered, and its CSV export."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from app import audit
from app.deps import Admin, SessionDep
from app.web import render

router = APIRouter(prefix="/admin", tags=["admin"], include_in_schema=False)

FilterParam = Annotated[str | None, Query(max_length=64)]


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    session: SessionDep,
    _: Admin,
    action: FilterParam = None,
    actor: FilterParam = None,
    outcome: FilterParam = None,
) -> Response:
    filters = {"action": action, "actor": actor, "outcome": outcome}
    events = audit.search(session, **filters)
    context = {"events": events, "filters": filters}
    return render(request, "audit.html", "_audit.html", context)


@router.get("/audit.csv")
def audit_csv(
    session: SessionDep,
    _: Admin,
    action: FilterParam = None,
    actor: FilterParam = None,
    outcome: FilterParam = None,
) -> Response:
    events = audit.search(session, action=action, actor=actor, outcome=outcome, limit=100_000)
    return Response(
        audit.to_csv(events),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
    )
