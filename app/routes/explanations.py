"""Explaining cases and reading stored explanations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from app import explaining
from app.deps import ServingDep, SessionDep
from app.schemas import ErrorResponse, ExplanationOut, ExplanationSummary
from app.upload import REQUEST_BODY_OPENAPI, read_explanation_request

router = APIRouter(prefix="/api/v1/explanations", tags=["explanations"])


def _errors(*codes: int) -> dict:
    return {code: {"model": ErrorResponse} for code in codes}


@router.post(
    "",
    status_code=201,
    response_model=ExplanationOut,
    responses=_errors(413, 415, 422, 503),
    openapi_extra=REQUEST_BODY_OPENAPI,
)
async def create_explanation(
    request: Request, session: SessionDep, serving: ServingDep
) -> ExplanationOut:
    """Explain one case: a features file (multipart field `file`, plus `k`) or JSON."""
    features, k = await read_explanation_request(request)
    row = await run_in_threadpool(explaining.explain_case, session, serving, features, k)
    return ExplanationOut.from_row(row)


@router.get("", response_model=list[ExplanationSummary])
def list_explanations(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> list[ExplanationSummary]:
    """The most recent explanations, newest first."""
    rows = explaining.recent_explanations(session, limit)
    return [ExplanationSummary.from_row(row) for row in rows]


@router.get("/{explanation_id}", response_model=ExplanationOut, responses=_errors(404))
def get_explanation(explanation_id: str, session: SessionDep) -> ExplanationOut:
    """One stored explanation, as it was returned when it was made."""
    return ExplanationOut.from_row(explaining.get_explanation(session, explanation_id))
