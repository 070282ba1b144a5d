"""Each request's id: the client's X-Request-ID when sane, else a new one."""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Receive, Scope, Send

from app import logs


class RequestId:
    """Gives each request an id (the client's X-Request-ID when sane, else a new one), kept in
    request.state for the audit trail, bound to every log line of the request (app.logs), and
    echoed in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if 0 < len(sent) <= 64 and sent.isprintable() else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", request_id.encode("latin-1")),
                ]
            await send(message)

        with logs.bound(request_id=request_id):
            await self.app(scope, receive, send_with_id)
