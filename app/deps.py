"""Typed dependencies the routes ask for."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import accounts, audit
from app.config import Settings
from app.errors import Forbidden, NoActiveModel, NotAuthenticated
from app.hot_path import run_on_hot_path
from app.i18n import N_, Label
from app.origin import check_origin
from app.serving import Serving, ServingState
from app.tables import Role, User

SESSION_COOKIE = "clipmed_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


# The dependencies are `async def` where they do no blocking work: FastAPI runs a plain `def`
# dependency on the thread pool, and each such hop cost more than the work it carried
# (docs/benchmarks.md, the explanation service profile).


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    """The request's session, closed after the answer: on the event loop when no transaction
    is open (nothing to say to the database), else on the thread pool (a rollback)."""
    session = request.app.state.sessions()
    try:
        yield session
    finally:
        if session.in_transaction():
            with anyio.CancelScope(shield=True):  # a cancelled request still ends its transaction
                await run_in_threadpool(session.close)
        else:
            session.close()


async def get_serving_state(request: Request) -> ServingState:
    return request.app.state.serving


def get_serving(state: ServingState) -> Serving:
    # Taken once per request: a version switch during the request does not affect it.
    serving = state.current
    if serving is None:
        raise NoActiveModel(N_("no model is active; register and activate a checkpoint"))
    return serving


async def serving_dependency(
    state: Annotated[ServingState, Depends(get_serving_state)],
) -> Serving:
    return get_serving(state)


@dataclass(frozen=True)
class Principal:
    """Who is asking, and how: a bearer token (no CSRF check) or a browser session."""

    user: User
    csrf_token: str | None  # set for browser sessions only

    @property
    def role(self) -> Role:
        return self.user.role

    @property
    def explanation_owner_filter(self) -> int | None:
        """None (all) for radiologists and admins; a clinician sees only their own."""
        return None if self.user.role in (Role.radiologist, Role.admin) else self.user.id


def identify(request: Request, session: Session) -> Principal | None:
    """The caller from `Authorization: Bearer` or the session cookie; None when anonymous."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return Principal(accounts.user_for_token(session, credentials.strip()), None)
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        found = accounts.find_web_session(session, session_id)
        if found is not None:
            web_session, user = found
            return Principal(user, web_session.csrf_token)
    return None


def identify_and_release(request: Request, session: Session) -> Principal | None:
    """`identify`, then its read transaction ended, so the connection goes back to the pool
    while the route reads the request body (sixteen uploads in flight held sixteen connections;
    the pool keeps five, so the others were opened and closed per request). The user is taken
    out of the session first: neither this rollback nor a later one (the database gone
    mid-request) can expire it, so the error page and the access log can still name them."""
    principal = identify(request, session)
    if principal is not None:
        session.expunge(principal.user)
    session.rollback()
    return principal


async def check_csrf(request: Request, principal: Principal) -> None:
    """State-changing browser requests come from this site (app.origin) and carry the
    session's token (header from htmx, else a hidden form field). Bearer-token requests cannot
    be forged by another site."""
    if principal.csrf_token is None or request.method in SAFE_METHODS:
        return
    check_origin(request)
    sent = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    form = None
    if sent is None and content_type.startswith(
        ("multipart/form-data", "application/x-www-form-urlencoded")
    ):
        # Starlette caches the parsed form, so the route reads (and closes) the same one.
        form = await request.form(max_files=1, max_fields=8)
        field = form.get(CSRF_FIELD)
        sent = field if isinstance(field, str) else None
    if not sent or not secrets.compare_digest(sent, principal.csrf_token):
        if form is not None:
            await form.close()
        raise Forbidden(N_("missing or invalid CSRF token; reload the page and try again"))


# Declared for the OpenAPI document (its security schemes, listed on every gated operation);
# `identify` reads the same header and cookie itself, so neither ever answers on its own.
BEARER = HTTPBearer(
    scheme_name="bearerToken",
    description="A personal API token (`clipmed users token`, or POST /api/v1/tokens).",
    auto_error=False,
)
SESSION = APIKeyCookie(
    name=SESSION_COOKIE,
    scheme_name="sessionCookie",
    description="A browser session from the login form (state-changing requests also need "
    "the session's CSRF token in the X-CSRF-Token header).",
    auto_error=False,
)


def require(*roles: Role) -> Callable:
    """The one gate of every non-public route: the caller must have one of `roles`."""
    allowed = frozenset(roles)

    async def dependency(
        request: Request,
        session: SessionDep,
        _bearer: Annotated[object, Depends(BEARER)],
        _session: Annotated[object, Depends(SESSION)],
    ) -> Principal:
        principal = None
        try:
            # Token and session lookups are blocking queries: off the event loop.
            principal = await run_on_hot_path(request, identify_and_release, request, session)
            if principal is None:
                raise NotAuthenticated(N_("log in, or send Authorization: Bearer <token>"))
            if principal.role not in allowed:
                raise Forbidden(
                    N_("the role '%(role)s' may not do this"), role=Label(principal.role.value)
                )
            await check_csrf(request, principal)
        except (NotAuthenticated, Forbidden) as e:
            await run_in_threadpool(
                audit.record_request,
                request,
                "access.denied",
                e.code,
                user=principal.user if principal is not None else None,
                target_type="route",
                target_id=f"{request.method} {request.url.path}"[:255],
            )
            raise
        request.state.principal = principal
        return principal

    dependency.allowed_roles = allowed  # type: ignore[attr-defined]  # read by the route tests
    return dependency


ANY_ROLE = (Role.clinician, Role.radiologist, Role.admin)

SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
ServingStateDep = Annotated[ServingState, Depends(get_serving_state)]
ServingDep = Annotated[Serving, Depends(serving_dependency)]
AnyUser = Annotated[Principal, Depends(require(*ANY_ROLE))]
Reviewer = Annotated[Principal, Depends(require(Role.radiologist, Role.admin))]
Admin = Annotated[Principal, Depends(require(Role.admin))]
