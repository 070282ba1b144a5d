"""The FastAPI application: wiring only; the logic lives in the service modules."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from urllib.parse import quote

import faiss
import torch
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError, DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import registry
from app.audit import RequestId
from app.config import Settings
from app.db import (
    database_unavailable,
    make_engine,
    make_session_factory,
    unstorable_value_message,
)
from app.errors import (
    AppError,
    DatabaseUnavailable,
    InvalidInput,
    NotAuthenticated,
    TooManyAttempts,
)
from app.i18n import ReaderLocale
from app.limits import BodySizeLimit
from app.metrics import Metrics, ObserveRequests
from app.routes import (
    admin,
    admin_jobs,
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
from app.security_headers import SecurityHeaders
from app.serving import ServingState
from app.throttle import LoginThrottle
from app.web import STATIC_DIR, is_htmx, render

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
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.serving = state
    app.state.metrics = Metrics(sessions, state)
    app.state.login_throttle = LoginThrottle.from_settings(settings)

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
            context["error_note"] = "nothing was changed."
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

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(ObserveRequests, metrics=app.state.metrics)  # inside RequestId: its id
    app.add_middleware(RequestId)
    app.add_middleware(ReaderLocale)  # error pages rendered by the handlers above speak it too
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
    app.mount(docs.SWAGGER_UI_URL, docs.SwaggerUIAssets(), name="swagger-ui")  # before /static
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
