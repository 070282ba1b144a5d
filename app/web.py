"""Rendering HTML: the templates and static files next to this module, and one URL, two
renderings (the full page, or only the fragment when htmx asks with `HX-Request`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

APP_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = APP_DIR / "templates"
STATIC_DIR = APP_DIR / "static"
RESEARCH_NOTICE = "Research use only — not for diagnosis"

templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.globals["research_notice"] = RESEARCH_NOTICE


def is_htmx(request: Request) -> bool:
    # htmx sends "true"; a history-restore request wants the full page.
    return (
        request.headers.get("hx-request") == "true"
        and request.headers.get("hx-history-restore-request") != "true"
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
