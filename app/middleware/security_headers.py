"""Security headers on every response: one pure ASGI middleware, so error pages, redirects,
static files and streamed responses get them as well as the routes' own answers."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# No inline script anywhere (templates load /static/*.js only; Swagger UI's init is a static
# file too). Inline style *attributes* stay allowed: the result page draws its bars with
# `style="width: N%"`, which cannot run code. htmx's own <style> element is off
# (includeIndicatorStyles=false in base.html; the indicator rules are in app.css).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "style-src-attr 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HSTS = "max-age=31536000; includeSubDomains"

ALWAYS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # Not no-referrer: under it a browser sends `Origin: null` on our own form posts, and the
    # origin check (app.origin) could not tell them from a forged one. same-origin sends
    # nothing to other sites (there are none on our pages anyway: CSP 'self').
    (b"referrer-policy", b"same-origin"),
)


def cacheable(path: str) -> bool:
    """Only the static assets (scripts, styles, Swagger UI's files) may be kept by a cache;
    every page and API answer may name a patient, a user or an audit event."""
    return path.startswith("/static/")


class SecurityHeaders:
    """Adds the headers above to every HTTP response (a route that set one of them keeps its
    own value, except Cache-Control outside /static: no-store always wins there).
    Strict-Transport-Security only when the request came over HTTPS (uvicorn takes the scheme
    from X-Forwarded-Proto of its trusted proxies): a browser ignores it over plain HTTP."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = list(ALWAYS)
        if scope.get("scheme") == "https":
            extra.append((b"strict-transport-security", HSTS.encode()))
        no_store = not cacheable(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if no_store:
                    headers = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
                    headers.append((b"cache-control", b"no-store"))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
