"""The pure ASGI middleware every request passes through, installed in one place.

Outermost first: security headers (on every answer, error pages included), the reader's
locale (error pages speak it), the request id (bound to every log line), request metrics and
the access log (inside the id, so the line carries it), the body size limit (closest to the
routes that read bodies)."""

from __future__ import annotations

from fastapi import FastAPI

from app.config import Settings
from app.middleware.body_limit import BodySizeLimit
from app.middleware.observe import ObserveRequests
from app.middleware.reader_locale import ReaderLocale
from app.middleware.request_id import RequestId
from app.middleware.security_headers import SecurityHeaders
from app.monitoring import Metrics


def install_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    # add_middleware wraps what is there already: the last added is the outermost
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(ObserveRequests, metrics=metrics)
    app.add_middleware(RequestId)
    app.add_middleware(ReaderLocale)
    app.add_middleware(SecurityHeaders)
