"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.deps import ServingStateDep, SessionDep
from app.payloads import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, operation_id="getHealth")
def healthz() -> Health:
    """200 whenever the process answers."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    operation_id="getReadiness",
    responses={503: {"model": Readiness, "description": "No model loaded, or no database"}},
)
def readyz(response: Response, session: SessionDep, state: ServingStateDep) -> Readiness:
    """200 only when a model is loaded and the database answers."""
    serving = state.current
    problems = []
    if serving is None:
        problems.append("no model is loaded")
    try:
        session.execute(text("SELECT 1"))
    except SQLAlchemyError as e:
        problems.append(f"database does not answer: {type(e).__name__}")
    if problems:
        response.status_code = 503
    return Readiness(
        status="not ready" if problems else "ready",
        model_version=serving.model_version if serving else None,
        catalog_version=serving.catalog_version if serving else None,
        problems=problems,
    )
