"""The clinician's screen: server-rendered pages, each also served as an htmx fragment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import audit, explaining, flagging, paging, presenting, registry
from app.admin_views import compare_metrics
from app.config import Settings
from app.deps import (
    AnyUser,
    Principal,
    Reviewer,
    ServingStateDep,
    SessionDep,
    SettingsDep,
    get_serving,
)
from app.errors import AppError, InvalidInput, NotFound
from app.identity import parse_identity
from app.models import Explanation, FlagReason, FlagStatus, Role
from app.parsing import parse_int
from app.schemas import RowId
from app.serving import ServingState
from app.upload import DEFAULT_K, read_explanation_request
from app.web import is_htmx, render
from model.outline import OutlineStore

router = APIRouter(tags=["pages"], include_in_schema=False, default_response_class=HTMLResponse)


def _index_context(settings: Settings, error: AppError | None = None) -> dict:
    return {
        "examples": presenting.list_examples(settings.data_dir),
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
    context = presenting.explanation_view(session, row, _training_outlines(state))
    context["can_flag"] = caller.role in (Role.radiologist, Role.admin)
    context["flags"] = presenting.flag_views(session, flagging.flags_of(session, row.id))
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
    context = _index_context(settings, error)
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
        case = await read_explanation_request(request)
        row = await run_in_threadpool(
            explaining.explain_case,
            session,
            serving,
            case,
            caller.user.id,
            audit.explanation_created(request),
        )
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
        k_value = parse_int(k, "k", *explaining.K_RANGE)
        case = await run_in_threadpool(presenting.load_example, settings.data_dir, name, k_value)
        row = await run_in_threadpool(
            explaining.explain_case,
            session,
            serving,
            case,
            caller.user.id,
            audit.explanation_created(request),
        )
    except AppError as e:
        return _failed(request, settings, e)
    return _created(request, session, row, state, caller)


FilterText = Annotated[str, Query(max_length=64)]
DayText = Annotated[str, Query(max_length=10, description="a UTC day, YYYY-MM-DD")]


@dataclass(frozen=True)
class ListQuery:
    """The filters both growing lists share, and the keyset cursor of the page asked for."""

    filters: dict[str, str]  # case identity, UTC days (since, until), user: as the form sent them
    after: str

    @property
    def identity(self) -> dict[str, str]:
        return parse_identity(self.filters)

    def page_url(self, path: str, after: str | None, **more: str) -> str | None:
        """The list at `after` (None: no such page) with the same filters."""
        if after is None:
            return None
        query = paging.query_string({**more, **self.filters}, after=after)
        return f"{path}?{query}" if query else path


def list_query(
    study_instance_uid: FilterText = "",
    patient_pseudonym: FilterText = "",
    since: DayText = "",
    until: DayText = "",
    user: FilterText = "",
    after: Annotated[str, Query(max_length=120, description="keyset cursor: next page")] = "",
) -> ListQuery:
    filters = {
        "study_instance_uid": study_instance_uid,
        "patient_pseudonym": patient_pseudonym,
        "since": since,
        "until": until,
        "user": user,
    }
    return ListQuery(filters, after)


ListQueryDep = Annotated[ListQuery, Depends(list_query)]


@router.get("/explanations")
def recent(request: Request, session: SessionDep, caller: AnyUser, q: ListQueryDep) -> Response:
    """Newest first, 50 a page (keyset: `after` the last row seen), filtered by case identity,
    UTC days and (for reviewers and admins; clinicians see their own) who asked. The filter
    form is a GET: htmx swaps the list and pushes the address."""
    f = q.filters
    context: dict = {"filters": f, "pick_user": caller.explanation_owner_filter is None}
    try:
        rows = explaining.recent_explanations(
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
        row = explaining.get_explanation(session, explanation_id, caller.explanation_owner_filter)
    except AppError as e:
        if isinstance(e, NotFound):
            audit.record_view(request, explanation_id, None)
        return render(request, "error.html", "_error.html", {"error": e}, e.status_code)
    audit.record_view(request, explanation_id, row)
    context = _explanation_context(session, row, state, caller)
    return render(request, "explanation.html", "_explanation_page.html", context)


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
        row = explaining.get_explanation(session, explanation_id)
        if kind not in ("field", "text"):
            raise InvalidInput(f"unknown flag target {target!r}")
        if "=" in corrected_value:
            value_field, _, corrected_value = corrected_value.partition("=")
            if kind != "field" or value_field != value:
                raise InvalidInput(
                    f"the correct value chosen is one of {value_field!r}, not of the flagged "
                    f"{value!r}"
                )
        rank = (
            parse_int(value, "the flagged text's rank", *explaining.K_RANGE)
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
        return render(request, "error.html", "_error.html", {"error": e}, e.status_code)
    return RedirectResponse(f"/explanations/{explanation_id}", status_code=303)


@router.get("/models")
def models_page(
    request: Request,
    session: SessionDep,
    caller: AnyUser,
    activated: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """Registered versions, their validation metrics side by side, each field's flag and
    accepted-correction rates; admins also get activation buttons and the history. After an
    activation (`activated`), a notice says which version is now served."""
    versions = registry.list_versions(session)
    is_admin = caller.role == Role.admin
    active = next((v for v in versions if v.is_active), None)
    context = {
        "notice": (
            f"Model {activated} is now served."
            if activated and active is not None and active.version == activated
            else None
        ),
        "models": versions,
        "metrics": compare_metrics(versions),
        "rates": flagging.rates_by_model(session),
        "is_admin": is_admin,
        "active": next((v for v in versions if v.is_active), None),
        "history": registry.history(session) if is_admin else [],
    }
    return render(request, "models.html", "models.html", context)


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
        "flags": presenting.flag_views(session, page.items),
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
        return render(request, "error.html", "_error.html", {"error": e}, e.status_code)
    return RedirectResponse("/review", status_code=303)
