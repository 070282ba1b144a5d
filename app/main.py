"""The FastAPI application: wiring only; the logic lives in the service modules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import faiss
import torch
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app import hot_path, openapi, problems
from app.config import Settings
from app.db import make_engine, make_session_factory
from app.explanations.together import Together
from app.middleware import install_middleware
from app.monitoring import Metrics
from app.registry_watch import load_active_model, watch_registry
from app.routes import include_routes
from app.serving import ServingState
from app.throttle import LoginThrottle


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = make_engine(settings.database_url, settings.sqlite_synchronous)
    sessions = make_session_factory(engine)
    state = ServingState()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        torch.set_num_threads(settings.torch_threads)
        # FAISS likewise: an exact search on 2 threads was 2-4x slower under concurrent
        # requests than on one (bench/index_scale.py, docs/benchmarks.md).
        faiss.omp_set_num_threads(settings.torch_threads)
        await run_in_threadpool(load_active_model, sessions, state)
        stop = asyncio.Event()
        poll = settings.registry_poll_seconds
        watcher = asyncio.create_task(watch_registry(sessions, state, poll, stop))
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
        # Served by app.routes.api.docs, behind a login like every other non-public route.
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
    app.state.hot_path = hot_path.make_limiter(settings)
    app.state.explanations_together = Together(
        sessions,
        app.state.hot_path,
        settings.explain_together_max,
        on_turn=app.state.metrics.turn_cases.observe,
    )

    problems.install(app)
    openapi.install(app)
    install_middleware(app, settings, app.state.metrics)
    include_routes(app)
    return app
