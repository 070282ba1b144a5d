"""The FastAPI application: wiring only; the logic lives in the service modules."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import faiss
import torch
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from app import openapi, problems, registry
from app.audit import RequestId
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.limits import BodySizeLimit
from app.metrics import Metrics, ObserveRequests
from app.routes import (
    admin,
    admin_jobs,
    admin_users,
    auth,
    docs,
    explanations,
    flags,
    health,
    jobs,
    metrics,
    models,
    pages,
    tokens,
)
from app.routes.api import users as users_api
from app.security_headers import SecurityHeaders
from app.serving import ServingState
from app.throttle import LoginThrottle
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

    def sync_active_model() -> None:
        # Activations and catalog swaps made by another process (a worker, another replica).
        with sessions() as session:
            if registry.sync_active(session, state):
                current = state.current
                log.info(
                    "now serving model %s (catalog %s), as the registry says",
                    current.model_version if current else None,
                    current.catalog_version if current else None,
                )

    async def watch_registry(stop: asyncio.Event) -> None:
        last_error = None
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.registry_poll_seconds)
            if stop.is_set():
                return
            try:
                await run_in_threadpool(sync_active_model)
                last_error = None
            except Exception as e:  # database away, or a checkpoint that does not load
                if str(e) != last_error:  # once per distinct problem, not every poll
                    log.exception("could not follow the registry")
                last_error = str(e)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(settings.torch_threads)
        # FAISS likewise: an exact search on 2 threads was 2-4x slower under concurrent
        # requests than on one (bench/index_scale.py, docs/benchmarks.md).
        faiss.omp_set_num_threads(settings.torch_threads)
        await run_in_threadpool(load_active_model)
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_registry(stop))
        yield
        # Not cancel(): a poll running in a thread would go on holding a connection, which
        # dispose() below would then leave open. The watcher returns after its current poll.
        stop.set()
        await watcher
        engine.dispose()

    app = FastAPI(
        title="CLIPMedical explanation service",
        version="1",
        description="Explains lung-nodule features with retrieved radiological descriptor texts.",
        lifespan=lifespan,
        # Served by app.routes.docs, behind a login like every other non-public route.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        generate_unique_id_function=openapi.operation_id,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.serving = state
    app.state.metrics = Metrics(sessions, state)
    app.state.login_throttle = LoginThrottle.from_settings(settings)

    problems.install(app)
    openapi.install(app)

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(ObserveRequests, metrics=app.state.metrics)  # inside RequestId: its id
    app.add_middleware(RequestId)
    app.add_middleware(SecurityHeaders)  # outermost: on every answer, error pages included
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(models.router)
    app.include_router(jobs.router)
    app.include_router(explanations.router)
    app.include_router(flags.router)
    app.include_router(tokens.router)
    app.include_router(pages.router)
    app.include_router(auth.router)
    app.include_router(docs.router)
    app.include_router(admin.router)
    app.include_router(admin_jobs.router)
    app.include_router(admin_users.router)
    app.include_router(users_api.router)
    app.mount(docs.SWAGGER_UI_URL, docs.SwaggerUIAssets(), name="swagger-ui")  # before /static
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
