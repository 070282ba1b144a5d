"""The login throttle: failed logins counted per (username, client address) and per address,
in the database (table login_attempts), so replicas share the counts and restarts keep them.

Per username alone, anyone could lock a user out by failing on their name; per (username,
address) a flood from one address locks only that address out of that account, and the
per-address limit stops one address from trying many usernames. A guess from many addresses is
slowed by argon2, not by this.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, true
from sqlalchemy.orm import Session
from starlette.requests import Request

from app.config import Settings
from app.db import as_utc
from app.errors import TooManyAttempts
from app.i18n import N_
from app.tables import LoginAttempt


def client_address(request: Request) -> str:
    """The TCP peer, or the client a trusted proxy names: uvicorn rewrites the peer from
    X-Forwarded-For only for the proxies of CLIPMED_FORWARDED_ALLOW_IPS (none by default)."""
    return request.client.host if request.client is not None else "unknown"


FOR_USERNAME = N_(
    "too many failed logins for %(name)s from your address; try again in %(seconds)s s"
)
FROM_ADDRESS = N_("too many failed logins from your address; try again in %(seconds)s s")


class LoginThrottle:
    """Past `max_failures` for one username from one address, or `max_failures_per_address`
    for any usernames from one address, within `window_s`: 429 until the oldest ages out."""

    def __init__(
        self, max_failures: int = 5, max_failures_per_address: int = 30, window_s: float = 300.0
    ) -> None:
        self.max_failures = max_failures
        self.max_failures_per_address = max_failures_per_address
        self.window = timedelta(seconds=window_s)

    def check(self, session: Session, username: str, address: str) -> None:
        now = datetime.now(UTC)
        recent = (LoginAttempt.address == address, LoginAttempt.at > now - self.window)
        counted = select(func.count(), func.min(LoginAttempt.at))
        for limit, where, message in (
            (self.max_failures, LoginAttempt.username == username[:64], FOR_USERNAME),
            (self.max_failures_per_address, true(), FROM_ADDRESS),
        ):
            failures, oldest = session.execute(counted.where(*recent, where)).one()
            if failures >= limit:
                wait = as_utc(oldest) + self.window - now
                retry_after = max(1, int(wait.total_seconds()) + 1)
                raise TooManyAttempts(
                    message, retry_after, name=repr(username), seconds=retry_after
                )

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginThrottle:
        return cls(
            settings.login_max_failures,
            settings.login_max_failures_per_address,
            settings.login_window_seconds,
        )

    def failed(self, session: Session, username: str, address: str) -> None:
        now = datetime.now(UTC)
        # What has left every window is of no use any more: the table stays small.
        session.execute(delete(LoginAttempt).where(LoginAttempt.at <= now - self.window))
        session.add(LoginAttempt(at=now, username=username[:64], address=address[:64]))
        session.commit()

    def succeeded(self, session: Session, username: str, address: str) -> None:
        session.execute(
            delete(LoginAttempt).where(
                LoginAttempt.username == username[:64], LoginAttempt.address == address[:64]
            )
        )
        session.commit()
