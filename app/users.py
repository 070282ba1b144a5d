"""Accounts over their whole life: list, deactivate, activate, change a role, reset a password.

One service for the command line (`clipmed users ...`), the admin page (/admin/users) and the
API (/api/v1/users/...). Each change is one transaction: the account's new state, the end of its
browser sessions and API tokens (its next request is 401), and the audit event commit together.
A refused attempt is audited too, in a transaction of its own after the rollback.

No change may leave the service without an active admin. The check locks every active admin's
row first (`SELECT ... FOR UPDATE`, in id order, so two changes cannot deadlock): two admins
demoting each other at once are serialised, and the second sees that it would remove the last.
SQLite ignores FOR UPDATE but runs one write transaction at a time.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.accounts import PASSWORDS, check_new_password
from app.audit import make_event
from app.db import rows_changed
from app.errors import AppError, LastActiveAdmin, NotFound
from app.i18n import N_
from app.tables import ApiToken, Role, User, WebSession


@dataclass(frozen=True)
class Actor:
    """Who makes a change, as the audit trail names them."""

    user: User | None  # None on the command line
    name: str | None = None  # the command line's "cli:<login>"
    request_id: str | None = None

    @classmethod
    def of_request(cls, request) -> Actor:
        return cls(request.state.principal.user, None, getattr(request.state, "request_id", None))

    @classmethod
    def command_line(cls) -> Actor:
        try:
            login = getpass.getuser()
        except (KeyError, OSError):  # no login name (a container's nameless uid)
            login = "unknown"
        return cls(None, f"cli:{login}"[:64])


@dataclass(frozen=True)
class Change:
    """What one action did: the account as it now is, and the credentials it ended."""

    user: User
    changed: bool  # False when the account was already so (nothing ended)
    sessions_ended: int
    tokens_revoked: int


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def user_id_of(session: Session, username: str) -> int:
    found = session.scalar(select(User.id).where(User.username == username))
    if found is None:
        raise NotFound(N_("no user %(name)s"), name=repr(username))
    return found


def deactivate(session: Session, user_id: int, actor: Actor) -> Change:
    """The account can no longer log in; its sessions and tokens end now."""

    def apply(user: User) -> bool:
        if not user.is_active:
            return False
        _keep_an_admin(session, user)
        user.is_active = False
        return True

    return _change(session, user_id, "user.deactivate", actor, apply, locks_admins=True)


def activate(session: Session, user_id: int, actor: Actor) -> Change:
    """The account can log in again (with new sessions and tokens: the old ones stay ended)."""

    def apply(user: User) -> bool:
        if user.is_active:
            return False
        user.is_active = True
        return True

    return _change(session, user_id, "user.activate", actor, apply, ends_credentials=False)


def set_role(session: Session, user_id: int, role: Role | str, actor: Actor) -> Change:
    """A new role; the account's sessions and tokens end, so no request runs with the old one."""
    role = Role(role)

    def apply(user: User) -> bool:
        if user.role == role:
            return False
        if role != Role.admin:
            _keep_an_admin(session, user)
        user.role = role
        return True

    return _change(session, user_id, "user.set_role", actor, apply, locks_admins=True)


def reset_password(session: Session, user_id: int, password: str, actor: Actor) -> Change:
    """A new password, set by an admin; every session and token of the account ends."""

    def apply(user: User) -> bool:
        check_new_password(password)
        user.password_hash = PASSWORDS.hash(password)
        return True

    return _change(session, user_id, "user.reset_password", actor, apply)


def _change(
    session: Session,
    user_id: int,
    action: str,
    actor: Actor,
    apply: Callable[[User], bool],
    *,
    locks_admins: bool = False,
    ends_credentials: bool = True,
) -> Change:
    def event(outcome: str):
        return make_event(
            action,
            outcome,
            user=actor.user,
            actor=actor.name,
            target_type="user",
            target_id=str(user_id),
            request_id=actor.request_id,
        )

    try:
        if locks_admins:
            _lock_active_admins(session)  # before the account's own row: one lock order
        user = session.scalar(
            select(User)
            .where(User.id == user_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if user is None:
            raise NotFound(N_("no user %(name)s"), name=user_id)
        changed = apply(user)
        sessions = tokens = 0
        if changed and ends_credentials:
            sessions, tokens = _end_credentials(session, user)
        session.add(event("success" if changed else "unchanged"))
        session.commit()
    except AppError as e:
        session.rollback()
        session.add(event(e.code))
        session.commit()
        raise
    return Change(user, changed, sessions, tokens)


def _lock_active_admins(session: Session) -> list[int]:
    """Locks the active admins' rows until the transaction ends; their ids. PostgreSQL
    re-reads a row it waited for, so one that was demoted meanwhile drops out."""
    return list(
        session.scalars(
            select(User.id)
            .where(User.role == Role.admin, User.is_active.is_(True))
            .order_by(User.id)
            .with_for_update()
        )
    )


def _keep_an_admin(session: Session, user: User) -> None:
    """Refuses a change that takes `user` out of the active admins when no other is left."""
    if user.role != Role.admin or not user.is_active:
        return
    if not set(_lock_active_admins(session)) - {user.id}:
        raise LastActiveAdmin(
            N_("%(name)s is the last active admin; make another account admin first"),
            name=repr(user.username),
        )


def _end_credentials(session: Session, user: User) -> tuple[int, int]:
    """Deletes the account's browser sessions and revokes its live tokens (same transaction)."""
    ended = rows_changed(session, delete(WebSession).where(WebSession.user_id == user.id))
    revoked = rows_changed(
        session,
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC)),
    )
    return ended, revoked
