"""The OpenAPI document and its viewer, for signed-in users only.

Swagger UI's files come from the static folder of the pinned `fastapi-offline` package, served
by this app (SwaggerUIAssets, mounted at /static/swagger-ui): no CDN, so /docs works offline and
under the Content-Security-Policy (its start-up script is /static/swagger-init.js, not inline)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from app.deps import AnyUser
from app.web import templates

router = APIRouter(include_in_schema=False)

SWAGGER_UI_URL = "/static/swagger-ui"
SWAGGER_UI_DIR = files("fastapi_offline") / "static"


class SwaggerUIAssets(StaticFiles):
    """Only the files the viewer loads (the package also holds ReDoc, which we do not serve)."""

    FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"})

    def __init__(self) -> None:
        super().__init__(directory=str(SWAGGER_UI_DIR))

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in self.FILES:
            return Response("Not Found", status_code=404, media_type="text/plain")
        return await super().get_response(path, scope)


@router.get("/openapi.json")
def openapi(request: Request, _: AnyUser) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def docs(request: Request, _: AnyUser) -> HTMLResponse:
    context = {"assets": SWAGGER_UI_URL, "openapi_url": "/openapi.json"}
    return templates.TemplateResponse(request, "docs.html", context)
