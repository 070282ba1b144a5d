"""How errors are answered: problem JSON on the API (`detail` and `code`), an error page or a
redirect to the login form on the pages, 503 + Retry-After while the database is away."""

from __future__ import annotations

import logging
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import DataError, DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.db import database_unavailable, unstorable_value_message
from app.errors import (
    AppError,
    DatabaseUnavailable,
    InvalidInput,
    NotAuthenticated,
    TooManyAttempts,
)
from app.web import is_htmx, render

log = logging.getLogger(__name__)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> Response:
        headers = {}
        if isinstance(exc, (TooManyAttempts, DatabaseUnavailable)):
            headers["Retry-After"] = str(exc.retry_after)
        if request.url.path.startswith("/api/") or request.url.path == "/openapi.json":
            if isinstance(exc, NotAuthenticated):
                headers["WWW-Authenticate"] = "Bearer"
            body = {"detail": exc.message, "code": exc.code}
            return JSONResponse(body, status_code=exc.status_code, headers=headers)
        if isinstance(exc, NotAuthenticated):  # a page: send the browser to the login form
            if is_htmx(request):
                return Response(status_code=401, headers={"HX-Redirect": "/login"})
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        context: dict = {"error": exc}
        if isinstance(exc, DatabaseUnavailable):
            context |= {"error_title": "Service unavailable", "error_note": "try again shortly."}
        return render(request, "error.html", "_error.html", context, exc.status_code, headers)

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> Response:
        # The database going away (restart, failover) is an outage, answered 503 + Retry-After;
        # the pool's pre-ping reconnects once it is back. Any other database error is a bug: 500.
        if isinstance(exc, DataError):  # e.g. a NUL character, which PostgreSQL cannot store
            problem = InvalidInput(unstorable_value_message(exc))
            return await app_error(request, problem)
        if not database_unavailable(exc):
            raise exc
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc.orig)
        unavailable = DatabaseUnavailable("the database is unavailable; try again shortly")
        return await app_error(request, unavailable)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI's own 400 for a body it cannot parse (not UTF-8, broken JSON): the API
        # answers it like any other invalid input, 422 with a code.
        if exc.status_code == 400 and request.url.path.startswith("/api/"):
            body = {
                "detail": f"could not read the request body: {exc.detail}",
                "code": "invalid_input",
            }
            return JSONResponse(body, status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in list(exc.errors())[:3]
        )
        return JSONResponse({"detail": detail, "code": "invalid_input"}, status_code=422)
