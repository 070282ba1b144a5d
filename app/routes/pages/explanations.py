"""The clinician's screen for explanations: upload, examples, the recent list and one
explanation, each page also served as an htmx fragment."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app import audit, flagging, paging
from app.config import Settings
from app.deps import AnyUser, Principal, ServingStateDep, SessionDep, SettingsDep, get_serving
from app.errors import AppError, NotFound
from app.explanations import service, together, views
from app.explanations.upload import DEFAULT_K, read_explanation_request
from app.i18n import N_
from app.parsing import parse_int
from app.routes.pages.lists import ListQueryDep
from app.serving import ServingState
from app.tables import Explanation, FlagReason, Role
from app.web import UPLOAD_ADVICE, is_htmx, render, render_error
from model.outline import OutlineStore

router = APIRouter(tags=["pages"], include_in_schema=False, default_response_class=HTMLResponse)


def _index_context(settings: Settings, error: AppError | None = None) -> dict:
    return {
        "examples": views.list_examples(settings.data_dir),
        "default_k": DEFAULT_K,
        "error": error,
    }


def _training_outlines(state: ServingState) -> OutlineStore | None:
    """The active checkpoint's outlines of its training cases, to draw similar cases."""
    serving = state.current
    return serving.checkpoint.outlines if serving is not None else None


def _explanation_context(
    session: Session, row: Explanation, state: ServingState, caller: Principal
) -> dict:
    """The explanation with its flags and, for reviewers, what the flag form offers."""
    context = views.explanation_view(session, row, _training_outlines(state))
    context["can_flag"] = caller.role in (Role.radiologist, Role.admin)
    context["flags"] = views.flag_views(session, flagging.flags_of(session, row.id))
    context["flag_reasons"] = list(FlagReason)
    return context


def _created(
    request: Request, session: Session, row: Explanation, state: ServingState, caller: Principal
) -> Response:
    """The fragment (htmx, which also moves the address bar), else a redirect to the page."""
    url = f"/explanations/{row.id}"
    if is_htmx(request):
        return render(
            request,
            "explanation.html",
            "_explanation_page.html",
            _explanation_context(session, row, state, caller),
            201,
            headers={"HX-Push-Url": url},
        )
    return RedirectResponse(url, status_code=303)


def _failed(request: Request, settings: Settings, error: AppError) -> Response:
    """The service's own message, with its status; nothing was stored."""
    context = _index_context(settings, error) | {
        "error_action": N_("Could not explain this case."),
        "error_advice": UPLOAD_ADVICE.get(error.status_code),
    }
    return render(request, "index.html", "_error.html", context, error.status_code)


@router.get("/")
def index(request: Request, settings: SettingsDep, _: AnyUser) -> Response:
    return render(request, "index.html", "_upload.html", _index_context(settings))


@router.post("/explanations")
async def explain_upload(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    state: ServingStateDep,
    caller: AnyUser,
) -> Response:
    """The upload form's target: the same reading and checks as the JSON API."""
    try:
        serving = get_serving(state)
        read_case = await read_explanation_request(request)
        row = await together.explain_for_request(request, serving, read_case, caller.user.id)
    except AppError as e:
        return _failed(request, settings, e)
    return _created(request, session, row, state, caller)


@router.post("/examples/{name}")
async def explain_example(
    name: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    state: ServingStateDep,
    caller: AnyUser,
    k: Annotated[str, Form()] = str(DEFAULT_K),
) -> Response:
    """Explains one of the held-out example files listed on the upload page."""
    try:
        serving = get_serving(state)
        k_value = parse_int(k, "k", *service.K_RANGE)
        read_case = partial(views.load_example, settings.data_dir, name, k_value)
        row = await together.explain_for_request(request, serving, read_case, caller.user.id)
    except AppError as e:
        return _failed(request, settings, e)
    return _created(request, session, row, state, caller)


@router.get("/explanations")
def recent(request: Request, session: SessionDep, caller: AnyUser, q: ListQueryDep) -> Response:
    """Newest first, 50 a page (keyset: `after` the last row seen), filtered by case identity,
    UTC days and (for reviewers and admins; clinicians see their own) who asked. The filter
    form is a GET: htmx swaps the list and pushes the address."""
    f = q.filters
    context: dict = {"filters": f, "pick_user": caller.explanation_owner_filter is None}
    try:
        rows = service.recent_explanations(
            session,
            paging.PAGE_SIZE + 1,
            caller.explanation_owner_filter,
            q.identity,
            since=f["since"],
            until=f["until"],
            user_id=paging.user_id_named(session, f["user"]) if context["pick_user"] else None,
            after=q.after,
        )
    except AppError as e:
        context |= {"items": [], "error": e}
        return render(request, "explanations.html", "_recent.html", context, e.status_code)
    page = paging.page_of(rows, lambda row: paging.time_id_cursor(row.created_at, row.id))
    context |= {
        "items": [
            {"row": row, "top_text": (row.result.get("texts") or [{}])[0].get("text")}
            for row in page.items
        ],
        "filtered": any(f.values()),
        "next_url": q.page_url("/explanations", page.next_cursor),
        "first_url": q.page_url("/explanations", "") if q.after else None,
    }
    return render(request, "explanations.html", "_recent.html", context)


@router.get("/explanations/{explanation_id}")
def explanation(
    explanation_id: str,
    request: Request,
    session: SessionDep,
    state: ServingStateDep,
    caller: AnyUser,
) -> Response:
    try:
        row = service.get_explanation(session, explanation_id, caller.explanation_owner_filter)
    except AppError as e:
        if isinstance(e, NotFound):
            audit.record_view(request, explanation_id, None, e)
        return render_error(request, e, N_("Could not show this explanation."))
    audit.record_view(request, explanation_id, row)
    context = _explanation_context(session, row, state, caller)
    return render(request, "explanation.html", "_explanation_page.html", context)
