"""Accounts as an admin page: every account, with buttons to deactivate or activate it, change its
role or reset its password. Each asks first (htmx's confirm on a boosted form: no inline script)
and the page then says what happened. The logic is app.users', shared with the API and the CLI."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app import users
from app.deps import Admin, SessionDep
from app.errors import AppError
from app.payloads import RowId
from app.tables import Role, User
from app.web import render, render_error

router = APIRouter(
    prefix="/admin/users",
    tags=["admin"],
    include_in_schema=False,
    default_response_class=HTMLResponse,
)

DONE = ("deactivated", "activated", "role", "password", "unchanged")


def _notice(user: User | None, done: str) -> str | None:
    """What the last action did, said only while the account still shows it (a link cannot make
    the page claim a change that did not happen)."""
    if user is None:
        return None
    ended = "their browser sessions and API tokens have ended"
    return {
        "deactivated": f"{user.username} is deactivated; {ended}." if not user.is_active else None,
        "activated": f"{user.username} can sign in again." if user.is_active else None,
        "role": f"{user.username} is now {user.role.value}; {ended}.",
        "password": f"The password of {user.username} was reset; {ended}.",
        "unchanged": f"{user.username} already was so; nothing changed.",
    }.get(done)


@router.get("")
def users_page(
    request: Request,
    session: SessionDep,
    _: Admin,
    user: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    done: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    rows = users.list_users(session)
    changed = next((row for row in rows if row.id == user), None)
    context = {"users": rows, "roles": list(Role), "notice": _notice(changed, done)}
    return render(request, "users.html", "users.html", context)


def _act(
    request: Request,
    session: Session,
    user_id: int,
    what: str,
    done: str,
    action: Callable[..., users.Change],  # (session, user_id, actor=...)
) -> Response:
    try:
        change = action(session, user_id, actor=users.Actor.of_request(request))
    except AppError as e:
        return render_error(request, e, f"Could not {what} account {user_id}")
    query = {"user": user_id, "done": done if change.changed else "unchanged"}
    return RedirectResponse(f"/admin/users?{urlencode(query)}", status_code=303)


@router.post("/{user_id}/deactivate")
def deactivate_user(user_id: RowId, request: Request, session: SessionDep, _: Admin) -> Response:
    return _act(request, session, user_id, "deactivate", "deactivated", users.deactivate)


@router.post("/{user_id}/activate")
def activate_user(user_id: RowId, request: Request, session: SessionDep, _: Admin) -> Response:
    return _act(request, session, user_id, "activate", "activated", users.activate)


@router.post("/{user_id}/role")
def set_user_role(
    user_id: RowId,
    role: Annotated[Role, Form()],
    request: Request,
    session: SessionDep,
    _: Admin,
) -> Response:
    action = functools.partial(users.set_role, role=role)
    return _act(request, session, user_id, "change the role of", "role", action)


@router.post("/{user_id}/password")
def reset_user_password(
    user_id: RowId,
    password: Annotated[str, Form(max_length=1024)],
    request: Request,
    session: SessionDep,
    _: Admin,
) -> Response:
    action = functools.partial(users.reset_password, password=password)
    return _act(request, session, user_id, "reset the password of", "password", action)
