"""Rendering HTML: the templates and static files at the repository's top level (beside
`app/`), and one URL, two renderings (the full page, or only the fragment when htmx asks with
`HX-Request`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape
from starlette.responses import HTMLResponse

from app.errors import AppError

ROOT_DIR = Path(__file__).resolve().parent.parent  # the repository (or the image's /app)
TEMPLATES_DIR = ROOT_DIR / "templates"
STATIC_DIR = ROOT_DIR / "static"
RESEARCH_NOTICE = "Research use only — not for diagnosis"

templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.globals["research_notice"] = RESEARCH_NOTICE


def csrf_token(request: Request) -> str:
    """The signed-in browser session's CSRF token ("" for bearer tokens and anonymous pages)."""
    principal = getattr(request.state, "principal", None)
    return (principal.csrf_token or "") if principal is not None else ""


def csrf_field(request: Request) -> Markup:
    """The hidden field every state-changing form carries (htmx sends the header instead)."""
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(
        escape(csrf_token(request))
    )


templates.env.globals["csrf_token"] = csrf_token
templates.env.globals["csrf_field"] = csrf_field


def is_htmx(request: Request) -> bool:
    # htmx sends "true"; a history-restore request, or a boosted form (a confirmed admin
    # action, its redirect followed), wants the full page.
    return (
        request.headers.get("hx-request") == "true"
        and request.headers.get("hx-history-restore-request") != "true"
        and request.headers.get("hx-boosted") != "true"
    )


def render(
    request: Request,
    page: str,
    fragment: str,
    context: dict[str, Any],
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """`fragment` for htmx requests, else `page` (which includes the fragment)."""
    name = fragment if is_htmx(request) else page
    response = templates.TemplateResponse(
        request, name, context, status_code=status_code, headers=headers
    )
    response.headers["Vary"] = "HX-Request"
    return response


def render_error(
    request: Request, error: AppError, title: str, note: str = "nothing was changed."
) -> HTMLResponse:
    """A domain error as the error page (or its fragment), under a heading saying what failed."""
    context = {"error": error, "error_title": title, "error_note": note}
    return render(request, "error.html", "_error.html", context, error.status_code)
