"""Prometheus scrapes: open inside the deployment network, or behind a token of their own."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request, Response

from app.deps import SettingsDep

router = APIRouter(tags=["metrics"], include_in_schema=False)


def scrape_allowed(request: Request, expected: str) -> bool:
    if not expected:
        return True
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(
        sent.strip().encode(), expected.encode()
    )


@router.get("/metrics")
def metrics(request: Request, settings: SettingsDep) -> Response:
    """The text exposition format. With CLIPMED_METRICS_TOKEN set, only for
    `Authorization: Bearer <that token>` (not a user's API token: scrapers are not users)."""
    if not scrape_allowed(request, settings.metrics_token.get_secret_value()):
        return Response(
            "send Authorization: Bearer <CLIPMED_METRICS_TOKEN>\n",
            status_code=401,
            media_type="text/plain",
            headers={"WWW-Authenticate": "Bearer"},
        )
    body, content_type = request.app.state.metrics.exposition(request.headers.get("accept", ""))
    return Response(body, headers={"Content-Type": content_type})
