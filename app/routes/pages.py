"""The clinician's screen: server-rendered pages, each also served as an htmx fragment."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import explaining, presenting
from app.config import Settings
from app.deps import ServingStateDep, SessionDep, SettingsDep, get_serving
from app.errors import AppError, InvalidInput
from app.models import Explanation
from app.upload import DEFAULT_K, read_explanation_request
from app.web import is_htmx, render

router = APIRouter(tags=["pages"], include_in_schema=False, default_response_class=HTMLResponse)

RECENT_LIMIT = 50


def _index_context(settings: Settings, error: AppError | None = None) -> dict:
    return {
        "examples": presenting.list_examples(settings.data_dir),
        "default_k": DEFAULT_K,
        "error": error,
    }


def _created(request: Request, session: Session, row: Explanation) -> Response:
    """The fragment (htmx, which also moves the address bar), else a redirect to the page."""
    url = f"/explanations/{row.id}"
    if is_htmx(request):
        context = presenting.explanation_view(session, row)
        return render(
            request,
            "explanation.html",
            "_explanation.html",
            context,
            201,
            headers={"HX-Push-Url": url},
        )
    return RedirectResponse(url, status_code=303)


def _failed(request: Request, settings: Settings, error: AppError) -> Response:
    """The service's own message, with its status; nothing was stored."""
    context = _index_context(settings, error)
    return render(request, "index.html", "_error.html", context, error.status_code)


@router.get("/")
def index(request: Request, settings: SettingsDep) -> Response:
    return render(request, "index.html", "_upload.html", _index_context(settings))


@router.post("/explanations")
async def explain_upload(
    request: Request, session: SessionDep, settings: SettingsDep, state: ServingStateDep
) -> Response:
    """The upload form's target: the same reading and checks as the JSON API."""
    try:
        serving = get_serving(state)
        features, k = await read_explanation_request(request)
        row = await run_in_threadpool(explaining.explain_case, session, serving, features, k)
    except AppError as e:
        return _failed(request, settings, e)
    return _created(request, session, row)


@router.post("/examples/{name}")
async def explain_example(
    name: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    state: ServingStateDep,
    k: Annotated[str, Form()] = str(DEFAULT_K),
) -> Response:
    """Explains one of the held-out example files listed on the upload page."""
    try:
        serving = get_serving(state)
        if not k.strip().lstrip("-").isdigit():
            raise InvalidInput(f"k must be an integer, got {k!r}")
        k_value = explaining.check_k(int(k))
        features = await run_in_threadpool(presenting.load_example, settings.data_dir, name)
        row = await run_in_threadpool(explaining.explain_case, session, serving, features, k_value)
    except AppError as e:
        return _failed(request, settings, e)
    return _created(request, session, row)


@router.get("/explanations")
def recent(request: Request, session: SessionDep) -> Response:
    rows = explaining.recent_explanations(session, RECENT_LIMIT)
    items = [
        {"row": row, "top_text": (row.result.get("texts") or [{}])[0].get("text")} for row in rows
    ]
    return render(request, "explanations.html", "_recent.html", {"items": items})


@router.get("/explanations/{explanation_id}")
def explanation(explanation_id: str, request: Request, session: SessionDep) -> Response:
    try:
        row = explaining.get_explanation(session, explanation_id)
    except AppError as e:
        return render(request, "error.html", "_error.html", {"error": e}, e.status_code)
    context = presenting.explanation_view(session, row)
    return render(request, "explanation.html", "_explanation.html", context)
