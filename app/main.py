"""The FastAPI application: wiring only; the logic lives in the service modules."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from app import registry
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.errors import AppError
from app.limits import BodySizeLimit
from app.routes import explanations, health, models, pages
from app.serving import ServingState
from app.web import STATIC_DIR

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    state = ServingState()

    def load_active_model() -> None:
        # A broken active checkpoint leaves the process up but not ready (/readyz says why).
        try:
            with sessions() as session:
                serving = registry.load_active(session, state)
        except Exception:
            log.exception("could not load the active model")
            return
        if serving is None:
            log.warning("no active model version; /readyz answers 503 until one is activated")
        else:
            log.info(
                "serving model %s (catalog %s)", serving.model_version, serving.catalog_version
            )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(settings.torch_threads)
        await run_in_threadpool(load_active_model)
        yield
        engine.dispose()

    app = FastAPI(
        title="CLIPMedical explanation service",
        version="1",
        description="Explains lung-nodule features with retrieved radiological descriptor texts.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.serving = state

    @app.exception_handler(AppError)
    async def app_error(_: Request, exc: AppError) -> JSONResponse:
        return JSONResponse({"detail": exc.message, "code": exc.code}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in list(exc.errors())[:3]
        )
        return JSONResponse({"detail": detail, "code": "invalid_input"}, status_code=422)

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(explanations.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
