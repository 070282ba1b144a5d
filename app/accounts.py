"""Accounts and credentials: users, argon2 passwords, bearer tokens, browser sessions."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from pwdlib import PasswordHash
from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.db import as_utc
from app.errors import InvalidInput, NotAuthenticated, NotFound
from app.i18n import N_
from app.tables import ApiToken, LoginForm, Role, User, WebSession

PASSWORDS = PasswordHash.recommended()  # argon2id with the library's current parameters
SESSION_LIFETIME = timedelta(hours=12)
LOGIN_FORM_LIFETIME = timedelta(minutes=30)
TOKEN_PREFIX = "clipmed_"

# Checked against an unknown username too, so a miss takes as long as a wrong password.
_DUMMY_HASH = PASSWORDS.hash(secrets.token_urlsafe(16))


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def has_users(session: Session) -> bool:
    return session.execute(select(func.count()).select_from(User)).scalar_one() > 0


def create_user(session: Session, username: str, role: Role | str, password: str) -> User:
    username = username.strip()
    if not username or len(username) > 64:
        raise InvalidInput(N_("a username needs 1 to 64 characters"))
    check_new_password(password)
    user = User(username=username, role=Role(role), password_hash=PASSWORDS.hash(password))
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise InvalidInput(N_("the username %(name)s is taken"), name=repr(username)) from None
    return user


def check_new_password(password: str) -> None:
    if len(password) < 8:
        raise InvalidInput(N_("a password needs at least 8 characters"))
    if len(password) > 1024:  # argon2 hashes anything, but slowly: no megabyte passwords
        raise InvalidInput(N_("a password has at most 1024 characters"))


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(N_("no user %(name)s"), name=repr(username))
    return user


def check_password(session: Session, username: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        PASSWORDS.verify(password, _DUMMY_HASH)
        return None
    if not PASSWORDS.verify(password, user.password_hash) or not user.is_active:
        return None
    return user


def create_token(session: Session, user: User) -> str:
    """A new personal API token; shown once, only its hash is kept."""
    return issue_token(session, user)[1]


def issue_token(session: Session, user: User) -> tuple[ApiToken, str]:
    """The stored row and the token itself (which is not stored)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(token_sha256=sha256(token), user_id=user.id)
    session.add(row)
    session.commit()
    return row, token


def list_tokens(session: Session, owner_id: int | None) -> list[ApiToken]:
    """Tokens of `owner_id`, or everyone's with None; newest first."""
    query = select(ApiToken).order_by(ApiToken.id.desc())
    if owner_id is not None:
        query = query.where(ApiToken.user_id == owner_id)
    return list(session.scalars(query))


def revoke_token_id(session: Session, token_id: int, owner_id: int | None) -> ApiToken:
    """Revokes one token of `owner_id` (any with None); someone else's reads as not found."""
    row = session.get(ApiToken, token_id)
    if row is None or (owner_id is not None and row.user_id != owner_id):
        raise NotFound(f"no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.commit()
    return row


def revoke_token(session: Session, token: str) -> None:
    row = session.scalar(select(ApiToken).where(ApiToken.token_sha256 == sha256(token)))
    if row is None:
        raise NotFound("no such token")
    row.revoked_at = datetime.now(UTC)
    session.commit()


def revoke_user_tokens(session: Session, user: User) -> int:
    """Revokes every live token of `user`; returns how many."""
    rows = session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    ).all()
    now = datetime.now(UTC)
    for row in rows:
        row.revoked_at = now
    session.commit()
    return len(rows)


# Built once: building a select costs as much as running this one (SQLAlchemy walks the new
# statement for its cache key each time); a bound parameter takes each request's hash.
_USER_OF_LIVE_TOKEN = (
    select(User)
    .join(ApiToken, ApiToken.user_id == User.id)
    .where(
        ApiToken.token_sha256 == bindparam("token_sha256"),
        ApiToken.revoked_at.is_(None),
        User.is_active.is_(True),
    )
)


def user_for_token(session: Session, token: str) -> User:
    """The active user of a live token: one query on the token's unique hash, every request
    (nothing cached, so a revocation or a deactivation holds from the next request on)."""
    user = session.scalar(_USER_OF_LIVE_TOKEN, {"token_sha256": sha256(token)})
    if user is None:
        raise NotAuthenticated(N_("the bearer token is unknown or revoked"))
    return user


def create_web_session(session: Session, user: User) -> str:
    """Starts a browser session; returns the opaque id the cookie carries."""
    session_id = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            id_sha256=sha256(session_id),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=datetime.now(UTC) + SESSION_LIFETIME,
        )
    )
    session.commit()
    return session_id


def find_web_session(session: Session, session_id: str) -> tuple[WebSession, User] | None:
    row = session.get(WebSession, sha256(session_id))
    if row is None:
        return None
    expires = as_utc(row.expires_at)
    user = session.get(User, row.user_id)
    if expires < datetime.now(UTC) or user is None or not user.is_active:
        return None
    return row, user


def end_web_session(session: Session, session_id: str) -> None:
    session.execute(delete(WebSession).where(WebSession.id_sha256 == sha256(session_id)))
    session.commit()


def start_login_form(session: Session) -> tuple[str, str]:
    """A new login form: (the id its cookie carries, the CSRF token the form carries)."""
    now = datetime.now(UTC)
    session.execute(delete(LoginForm).where(LoginForm.expires_at < now))  # keep the table small
    form_id, token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    session.add(
        LoginForm(id_sha256=sha256(form_id), csrf_token=token, expires_at=now + LOGIN_FORM_LIFETIME)
    )
    session.commit()
    return form_id, token


def use_login_form(session: Session, form_id: str, token: str) -> bool:
    """True when `token` is the one this server gave the form whose cookie says `form_id`, and
    that form has not expired; the form is used up either way."""
    row = session.get(LoginForm, sha256(form_id)) if form_id else None
    if row is None:
        return False
    session.delete(row)
    session.commit()
    fresh = as_utc(row.expires_at) > datetime.now(UTC)
    return fresh and bool(token) and secrets.compare_digest(token, row.csrf_token)
