"""The reader's locale for everything rendered while answering a request."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.i18n import LANGUAGE_COOKIE, choose_locale, reset_current_locale, set_current_locale


class ReaderLocale:
    """Pure ASGI middleware: chooses the request's locale once, from its cookie and headers,
    for everything that renders during it (templates, their imported macros, error pages)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        chosen = choose_locale(
            request.cookies.get(LANGUAGE_COOKIE), request.headers.get("accept-language", "")
        )
        token = set_current_locale(chosen)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_current_locale(token)
