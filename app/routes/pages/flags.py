"""Flags as pages: the flag form on an explanation page, and the reviewers' queue."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app import audit, flagging, paging
from app.deps import Reviewer, SessionDep
from app.errors import AppError, InvalidInput
from app.explanations import service, views
from app.i18n import N_
from app.parsing import parse_int
from app.payloads import RowId
from app.routes.pages.lists import FilterText, ListQueryDep
from app.tables import FlagReason, FlagStatus
from app.web import render, render_error

router = APIRouter(tags=["pages"], include_in_schema=False, default_response_class=HTMLResponse)


@router.post("/explanations/{explanation_id}/flags")
def flag_explanation(
    explanation_id: str,
    request: Request,
    session: SessionDep,
    caller: Reviewer,
    target: Annotated[str, Form(max_length=80)],
    reason: Annotated[FlagReason, Form()],
    corrected_value: Annotated[str, Form(max_length=255)] = "",
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """The flag form on an explanation page: `target` is "field:<name>" or "text:<rank>";
    `corrected_value` is "<field>=<code>" (one select for all fields: it names its field)."""
    kind, _, value = target.partition(":")
    try:
        row = service.get_explanation(session, explanation_id)
        if kind not in ("field", "text"):
            raise InvalidInput(N_("unknown flag target %(target)s"), target=repr(target))
        if "=" in corrected_value:
            value_field, _, corrected_value = corrected_value.partition("=")
            if kind != "field" or value_field != value:
                raise InvalidInput(
                    N_(
                        "the correct value chosen is one of %(chosen)s, not of the flagged "
                        "%(flagged)s"
                    ),
                    chosen=repr(value_field),
                    flagged=repr(value),
                )
        rank = (
            parse_int(value, "the flagged text's rank", *service.K_RANGE)
            if kind == "text"
            else None
        )
        flagging.create_flag(
            session,
            row,
            caller.user,
            field=value if kind == "field" else None,
            text_rank=rank,
            reason=reason,
            corrected_value=corrected_value,
            comment=comment,
            audit_event=audit.flag_action(request, "flag.create"),
        )
    except AppError as e:
        return render_error(request, e, N_("Could not record this flag."))
    return RedirectResponse(f"/explanations/{explanation_id}", status_code=303)


@router.get("/review")
def review_queue(
    request: Request,
    session: SessionDep,
    caller: Reviewer,
    q: ListQueryDep,
    status: FlagStatus = FlagStatus.open,
    field: FilterText = "",
) -> Response:
    """Flags newest first, 50 a page (keyset on the flag id), filtered by status, field, who
    raised them, UTC days and the flagged explanation's identity."""
    f = q.filters
    shown = {"status": status.value, "field": field}
    context: dict = {"filters": shown | f, "statuses": list(FlagStatus), "me": caller.user.id}
    try:
        rows = flagging.review_queue(
            session,
            status=status,
            field=field or None,
            limit=paging.PAGE_SIZE + 1,
            since=f["since"],
            until=f["until"],
            flagged_by=paging.user_id_named(session, f["user"]),
            identity=q.identity,
            after=q.after,
        )
    except AppError as e:
        context |= {"flags": [], "error": e}
        return render(request, "review.html", "review.html", context, e.status_code)
    page = paging.page_of(rows, lambda flag: str(flag.id))
    context |= {
        "flags": views.flag_views(session, page.items),
        "next_url": q.page_url("/review", page.next_cursor, **shown),
        "first_url": q.page_url("/review", "", **shown) if q.after else None,
    }
    return render(request, "review.html", "review.html", context)


@router.post("/review/{flag_id}")
def review_flag(
    flag_id: RowId,
    request: Request,
    session: SessionDep,
    caller: Reviewer,
    decision: Annotated[str, Form(pattern="^(accept|reject)$")],
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    try:
        flagging.review(
            session,
            flag_id,
            caller.user,
            decision == "accept",
            note,
            audit.flag_action(request, f"flag.{decision}"),
            audit.flag_action(request, f"flag.{decision}", "forbidden"),
        )
    except AppError as e:
        return render_error(request, e, N_("Could not record this decision."))
    return RedirectResponse("/review", status_code=303)
