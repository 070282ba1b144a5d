"""Every route of the service, included in one place: the JSON API by resource
(`app/routes/api/<resource>.py`) and the pages by resource (`app/routes/pages/<resource>.py`)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.routes.api import (
    docs,
    explanations,
    flags,
    health,
    jobs,
    models,
    monitoring,
    tokens,
    users,
)
from app.routes.pages import audit, auth, language, reports
from app.routes.pages import explanations as explanation_pages
from app.routes.pages import flags as flag_pages
from app.routes.pages import jobs as job_pages
from app.routes.pages import models as model_pages
from app.routes.pages import users as user_pages
from app.web import STATIC_DIR

API = (health, monitoring, models, jobs, explanations, flags, tokens, users)
PAGES = (
    explanation_pages,
    flag_pages,
    model_pages,
    auth,
    language,
    docs,
    audit,
    reports,
    job_pages,
    user_pages,
)


def include_routes(app: FastAPI) -> None:
    """All routers, then the static mounts (Swagger UI's assets before /static)."""
    for module in (*API, *PAGES):
        app.include_router(module.router)
    app.mount(docs.SWAGGER_UI_URL, docs.SwaggerUIAssets(), name="swagger-ui")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
