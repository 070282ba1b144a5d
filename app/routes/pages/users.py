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
from app.i18n import N_, gettext, translate_label
from app.payloads import RowId
from app.tables import Role, User
from app.web import render, render_error

router = APIRouter(
    prefix="/admin/users",
    tags=["admin"],
    include_in_schema=False,
    default_response_class=HTMLResponse,
)

# What the page says after each action (`done`); %(name)s is the account's username.
NOTICES = {
    "deactivated": N_("%(name)s is deactivated; their browser sessions and API tokens have ended."),
    "activated": N_("%(name)s can sign in again."),
    "role": N_("%(name)s is now %(role)s; their browser sessions and API tokens have ended."),
    "password": N_(
        "The password of %(name)s was reset; their browser sessions and API tokens have ended."
    ),
    "unchanged": N_("%(name)s already was so; nothing changed."),
}
# What could not be done, when an action is refused; %(id)s is the account's id.
REFUSALS = {
    "deactivated": N_("Could not deactivate account %(id)s."),
    "activated": N_("Could not activate account %(id)s."),
    "role": N_("Could not change the role of account %(id)s."),
    "password": N_("Could not reset the password of account %(id)s."),
}


def _notice(user: User | None, done: str) -> str | None:
    """What the last action did, said only while the account still shows it (a link cannot make
    the page claim a change that did not happen)."""
    if user is None or done not in NOTICES:
        return None
    if (done == "deactivated" and user.is_active) or (done == "activated" and not user.is_active):
        return None
    values = {"name": user.username, "role": translate_label(user.role.value)}
    return gettext(NOTICES[done]) % values


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
    done: str,
    action: Callable[..., users.Change],  # (session, user_id, actor=...)
) -> Response:
    try:
        change = action(session, user_id, actor=users.Actor.of_request(request))
    except AppError as e:
        return render_error(request, e, gettext(REFUSALS[done]) % {"id": user_id})
    query = {"user": user_id, "done": done if change.changed else "unchanged"}
    return RedirectResponse(f"/admin/users?{urlencode(query)}", status_code=303)


@router.post("/{user_id}/deactivate")
def deactivate_user(user_id: RowId, request: Request, session: SessionDep, _: Admin) -> Response:
    return _act(request, session, user_id, "deactivated", users.deactivate)


@router.post("/{user_id}/activate")
def activate_user(user_id: RowId, request: Request, session: SessionDep, _: Admin) -> Response:
    return _act(request, session, user_id, "activated", users.activate)


@router.post("/{user_id}/role")
def set_user_role(
    user_id: RowId,
    role: Annotated[Role, Form()],
    request: Request,
    session: SessionDep,
    _: Admin,
) -> Response:
    action = functools.partial(users.set_role, role=role)
    return _act(request, session, user_id, "role", action)


@router.post("/{user_id}/password")
def reset_user_password(
    user_id: RowId,
    password: Annotated[str, Form(max_length=1024)],
    request: Request,
    session: SessionDep,
    _: Admin,
) -> Response:
    action = functools.partial(users.reset_password, password=password)
    return _act(request, session, user_id, "password", action)
