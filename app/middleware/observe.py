"""Each request counted and timed by route template (the app's Prometheus metrics), and one
access log line per request, with the request id that RequestId bound."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.monitoring import Metrics

access_log = logging.getLogger("app.access")

UNMATCHED = "unmatched"  # the route label of a request no route matched (404s of any path)
# Routes polled by machines: their successful requests are logged at DEBUG, not INFO.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


def route_template(scope: Scope, outer_root_path: str) -> str:
    """The matched route's path template, e.g. /api/v1/explanations/{explanation_id}."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if template:
        return template
    root_path = scope.get("root_path", "")
    if root_path != outer_root_path:  # a mount (static files): its prefix, not the file
        return f"{root_path.removeprefix(outer_root_path)}/{{path}}"
    return UNMATCHED


class ObserveRequests:
    """Pure ASGI middleware, inside RequestId: counts and times each request by route
    template, and logs one access line (with the request id that RequestId bound)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        outer_root_path = scope.get("root_path", "")
        status = 500  # unless a response starts: an exception became the server's 500
        observed = False

        def observe() -> None:
            nonlocal observed
            observed = True
            seconds = time.perf_counter() - started
            route = route_template(scope, outer_root_path)
            self.metrics.observe_request(scope["method"], route, status, seconds)
            log_access(scope, route, status, seconds)

        async def send_observing(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                observe()  # before the last bytes go out: a client never sees an uncounted answer
            await send(message)

        try:
            await self.app(scope, receive, send_observing)
        finally:
            if not observed:
                observe()


def log_access(scope: Scope, route: str, status: int, seconds: float) -> None:
    principal = scope.get("state", {}).get("principal")
    fields = {
        "method": scope["method"],
        "route": route,
        "path": scope["path"],
        "status": status,
        "duration_ms": round(seconds * 1000, 1),
    }
    if principal is not None:
        fields["user"] = principal.user.username
    quiet = route in QUIET_ROUTES and status < 400
    access_log.log(
        logging.DEBUG if quiet else logging.INFO,
        "%s %s %d %.1f ms",
        scope["method"],
        scope["path"],
        status,
        fields["duration_ms"],
        extra=fields,
    )
