"""The OpenAPI document and its viewer, for signed-in users only."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from app.deps import AnyUser

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
def openapi(request: Request, _: AnyUser) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def docs(_: AnyUser) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="CLIPMedical API")
