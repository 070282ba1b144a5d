"""The one boundary where errors become answers: RFC 9457 problem details for the API.

Every error the API sends is `application/problem+json`:
`{"type", "title", "status", "detail", "instance", "code"}`, where `type` is
`urn:clipmedical:problem:<code>`, `title` names the kind of problem, `detail` says what is
wrong with this request, `instance` is the request's path, and `code` (the machine-readable kind
clients matched on before) is kept as an extension member. Pages get the error page instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
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
from app.web import NOTHING_CHANGED, is_htmx, render

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:clipmedical:problem:"
# Starlette's own errors on API paths (an unknown path, a method the path does not take)
HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


class Problem(BaseModel):
    """An error, as RFC 9457 problem details (plus `code`)."""

    type: str = Field(description="URI naming the kind of problem: urn:clipmedical:problem:<code>")
    title: str = Field(description="The kind of problem, in words (the same for every such error)")
    status: int = Field(description="The HTTP status code of this answer")
    detail: str = Field(description="What is wrong with this request, in words")
    instance: str = Field(description="The path of the request that failed")
    code: str = Field(description="Machine-readable kind of error (as before RFC 9457)")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:clipmedical:problem:invalid_input",
                    "title": "Invalid input",
                    "status": 422,
                    "detail": "features have 15 values per slice; the model expects 16",
                    "instance": "/api/v1/explanations",
                    "code": "invalid_input",
                }
            ]
        }
    )


def title_of(code: str) -> str:
    return code.replace("_", " ").capitalize()


def problem(
    request: Request,
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = Problem(
        type=TYPE_PREFIX + code,
        title=title_of(code),
        status=status,
        detail=detail,
        instance=request.url.path,
        code=code,
    )
    return JSONResponse(
        body.model_dump(), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


def responses(*statuses: int) -> dict[int | str, dict]:
    """A route's documented error answers (`responses=`); `document_problems` files their
    bodies under application/problem+json."""
    return {status: {"model": Problem} for status in statuses}


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path == "/openapi.json"


async def app_error(request: Request, exc: AppError) -> Response:
    headers = {}
    if isinstance(exc, (TooManyAttempts, DatabaseUnavailable)):
        headers["Retry-After"] = str(exc.retry_after)
    if _is_api(request):
        if isinstance(exc, NotAuthenticated):
            headers["WWW-Authenticate"] = "Bearer"
        return problem(request, exc.status_code, exc.code, exc.message, headers)
    if isinstance(exc, NotAuthenticated):  # a page: send the browser to the login form
        if is_htmx(request):
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
    context: dict = {"error": exc}
    if isinstance(exc, DatabaseUnavailable):
        context["error_note"] = NOTHING_CHANGED
    return render(request, "error.html", "_error.html", context, exc.status_code, headers)


async def database_error(request: Request, exc: DBAPIError) -> Response:
    # The database going away (restart, failover) is an outage, answered 503 + Retry-After;
    # the pool's pre-ping reconnects once it is back. Any other database error is a bug: 500.
    if isinstance(exc, DataError):  # e.g. a NUL character, which PostgreSQL cannot store
        return await app_error(request, InvalidInput(unstorable_value_message(exc)))
    if not database_unavailable(exc):
        raise exc
    log.warning("%s %s: database unavailable: %s", request.method, request.url.path, exc.orig)
    unavailable = DatabaseUnavailable("the database is unavailable; try again shortly")
    return await app_error(request, unavailable)


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if not _is_api(request):
        return await http_exception_handler(request, exc)
    if exc.status_code == 400:
        # FastAPI's own 400 for a body it cannot parse (not UTF-8, broken JSON): answered like
        # any other invalid input, 422.
        detail = f"could not read the request body: {exc.detail}"
        return problem(request, 422, "invalid_input", detail)
    code = HTTP_CODES.get(exc.status_code, "error")
    return problem(request, exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def request_invalid(request: Request, exc: RequestValidationError) -> Response:
    detail = "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in list(exc.errors())[:3]
    )
    return problem(request, 422, "invalid_input", detail)


_E = TypeVar("_E", bound=Exception)


def _handling(
    kind: type[_E], handle: Callable[[Request, _E], Awaitable[Response]]
) -> tuple[type[_E], Callable[[Request, Exception], Awaitable[Response]]]:
    """`kind` and its handler as Starlette takes them: its signature types every handler for
    Exception, and Starlette only calls it with an instance of `kind`."""

    async def handler(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, kind)
        return await handle(request, exc)

    return kind, handler


def install(app: FastAPI) -> None:
    app.add_exception_handler(*_handling(AppError, app_error))
    app.add_exception_handler(*_handling(DBAPIError, database_error))
    app.add_exception_handler(*_handling(StarletteHTTPException, http_error))
    app.add_exception_handler(*_handling(RequestValidationError, request_invalid))


def document_problems(document: dict) -> dict:
    """Files every Problem body of the OpenAPI document under application/problem+json
    (FastAPI puts a response `model` under application/json)."""
    ref = {"$ref": "#/components/schemas/Problem"}
    for operation in (op for path in document["paths"].values() for op in path.values()):
        for response in operation.get("responses", {}).values():
            content = response.get("content", {})
            if content.get("application/json", {}).get("schema") == ref:
                content[PROBLEM_JSON] = content.pop("application/json")
    return document
