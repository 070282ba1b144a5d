"""Browser login and logout: a server-side session whose id is the only thing in the cookie."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import accounts, audit
from app.deps import SESSION_COOKIE, AnyUser, SessionDep
from app.errors import AppError, Forbidden, TooManyAttempts
from app.i18n import N_
from app.origin import check_origin
from app.throttle import LoginThrottle, client_address
from app.web import local_path, render

router = APIRouter(tags=["auth"], include_in_schema=False, default_response_class=HTMLResponse)

LOGIN_FORM_COOKIE = "clipmed_login_form"


def _is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def _safe_next(target: str | None) -> str:
    return local_path(target) or "/"


def _login_page(
    request: Request, session: Session, error: AppError | None, next_: str, status: int
) -> Response:
    # Login CSRF: no session yet to hold a token, so a pre-session row does (accounts.
    # start_login_form); the cookie only names that row, and the origin check comes first.
    form_id, token = accounts.start_login_form(session)
    context = {"login_csrf": token, "error": error, "next": next_}
    response = render(request, "login.html", "login.html", context, status)
    response.set_cookie(
        LOGIN_FORM_COOKIE,
        form_id,
        max_age=int(accounts.LOGIN_FORM_LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=_is_https(request),
        path="/login",
    )
    if isinstance(error, TooManyAttempts):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


@router.get("/login")
def login_form(request: Request, session: SessionDep, next: str = "/") -> Response:  # noqa: A002
    return _login_page(request, session, None, _safe_next(next), 200)


@router.post("/login")
async def login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",  # noqa: A002
) -> Response:
    next_ = _safe_next(next)

    async def refuse(error: AppError, status: int) -> Response:
        return await run_in_threadpool(_login_page, request, session, error, next_, status)

    try:
        check_origin(request)
    except Forbidden as e:
        await _audit_login(request, username, "origin_refused")
        return await refuse(e, 403)
    form_id = request.cookies.get(LOGIN_FORM_COOKIE, "")
    if not await run_in_threadpool(accounts.use_login_form, session, form_id, csrf_token):
        await _audit_login(request, username, "csrf_failed")
        return await refuse(Forbidden(N_("the form expired; try again")), 403)
    throttle: LoginThrottle = request.app.state.login_throttle
    address = client_address(request)
    try:
        await run_in_threadpool(throttle.check, session, username, address)
    except TooManyAttempts as e:
        await _audit_login(request, username, "throttled")
        return await refuse(e, 429)
    user = await run_in_threadpool(accounts.check_password, session, username, password)
    if user is None:
        await run_in_threadpool(throttle.failed, session, username, address)
        await _audit_login(request, username, "failed")
        return await refuse(AppError(N_("unknown username or wrong password")), 401)
    await run_in_threadpool(throttle.succeeded, session, username, address)
    await run_in_threadpool(audit.record_request, request, "login", "success", user=user)
    session_id = accounts.create_web_session(session, user)
    response = RedirectResponse(next_, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(accounts.SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=_is_https(request),
    )
    response.delete_cookie(LOGIN_FORM_COOKIE, path="/login")
    return response


async def _audit_login(request: Request, username: str, outcome: str) -> None:
    await run_in_threadpool(audit.record_request, request, "login", outcome, actor=username[:64])


@router.post("/logout")
def logout(request: Request, session: SessionDep, _: AnyUser) -> Response:
    audit.record_request(request, "logout", "success")
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        accounts.end_web_session(session, session_id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response
