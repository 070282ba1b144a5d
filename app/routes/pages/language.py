"""The language switch in the page header: remembers the reader's choice in a cookie."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.errors import AppError, InvalidInput, NotFound
from app.i18n import LANGUAGE_COOKIE, LANGUAGES, N_
from app.web import local_path, render_error

router = APIRouter(tags=["pages"], include_in_schema=False, default_response_class=HTMLResponse)

ONE_YEAR = 365 * 24 * 3600


@router.get("/lang/{code}")
def switch_language(
    code: str, request: Request, next: Annotated[str, Query(max_length=2000)] = "/"
) -> Response:
    """Sets the `lang` cookie and goes back to `next`, a path on this site (anything else is
    refused: the switch is no open redirect). A preference, not a state change of the
    service, so a plain link (GET) works without JavaScript."""
    error: AppError
    if code not in LANGUAGES:
        offered = ", ".join(LANGUAGES)
        error = NotFound(
            N_("no language %(code)s; offered: %(offered)s"), code=repr(code), offered=offered
        )
        return render_error(request, error)
    target = local_path(next)
    if target is None:
        error = InvalidInput(
            N_("next must be a path on this site, not %(next)s"), next=repr(next[:200])
        )
        return render_error(request, error)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        LANGUAGE_COOKIE,
        code,
        max_age=ONE_YEAR,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response
