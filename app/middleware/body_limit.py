"""Request body size limit, checked from Content-Length and again while the body is read."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PayloadTooLarge


class BodySizeLimit:
    """Pure ASGI middleware: the body's reader gets PayloadTooLarge (turned into a 413 by the
    app's error handler) instead of more bytes than `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        too_large = None
        # bytes.isdigit() is ASCII-only; the length check keeps int() under its digit limit
        if declared is not None and (
            not declared.isdigit() or len(declared) > len(str(limit)) or int(declared) > limit
        ):
            size = declared.decode(errors="replace")[:40]
            too_large = f"request body of {size} bytes is over the limit of {limit} bytes"
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if too_large is not None:
                raise PayloadTooLarge(too_large)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)
