"""Explaining cases and reading stored explanations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app import audit, dicom_sr, explaining
from app.deps import AnyUser, ServingDep, SessionDep
from app.errors import NotFound
from app.schemas import ErrorResponse, ExplanationOut, ExplanationSummary, Text
from app.upload import REQUEST_BODY_OPENAPI, read_explanation_request

router = APIRouter(prefix="/api/v1/explanations", tags=["explanations"])


def _errors(*codes: int) -> dict:
    return {code: {"model": ErrorResponse} for code in codes}


@router.post(
    "",
    status_code=201,
    response_model=ExplanationOut,
    responses=_errors(401, 403, 413, 415, 422, 503),
    openapi_extra=REQUEST_BODY_OPENAPI,
)
async def create_explanation(
    request: Request, session: SessionDep, serving: ServingDep, caller: AnyUser
) -> ExplanationOut:
    """Explain one case: a features file (multipart field `file`, plus `k`) or JSON."""
    case = await read_explanation_request(request)
    row = await run_in_threadpool(
        explaining.explain_case,
        session,
        serving,
        case,
        caller.user.id,
        audit.explanation_created(request),
    )
    return ExplanationOut.from_row(row)


@router.get("", response_model=list[ExplanationSummary], responses=_errors(401, 403, 422))
def list_explanations(
    session: SessionDep, caller: AnyUser, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> list[ExplanationSummary]:
    """The most recent explanations, newest first (a clinician's own only)."""
    rows = explaining.recent_explanations(session, limit, caller.explanation_owner_filter)
    return [ExplanationSummary.from_row(row) for row in rows]


@router.get(
    "/{explanation_id}", response_model=ExplanationOut, responses=_errors(401, 403, 404, 422)
)
def get_explanation(
    explanation_id: Text, request: Request, session: SessionDep, caller: AnyUser
) -> ExplanationOut:
    """One stored explanation, as it was returned when it was made."""
    try:
        row = explaining.get_explanation(session, explanation_id, caller.explanation_owner_filter)
    except NotFound:
        audit.record_view(request, explanation_id, None)
        raise
    audit.record_view(request, explanation_id, row)
    return ExplanationOut.from_row(row)


@router.get(
    "/{explanation_id}/sr",
    response_class=Response,
    responses={
        200: {
            "content": {"application/dicom": {}},
            "description": "A DICOM SR (TID 1500 Measurement Report) referencing the SEG",
        },
        **_errors(401, 403, 422, 503),
        404: {
            "model": ErrorResponse,
            "description": "No such explanation, or no DICOM SEG behind it (the SR cites one)",
        },
    },
)
def get_explanation_sr(
    explanation_id: Text,
    request: Request,
    session: SessionDep,
    serving: ServingDep,
    caller: AnyUser,
) -> Response:
    """The explanation of a DICOM SEG as a DICOM SR: each descriptor's served value, coded,
    in a Measurement Report that references the SEG's segment."""
    try:
        row = explaining.get_explanation(session, explanation_id, caller.explanation_owner_filter)
    except NotFound:
        audit.record_view(request, explanation_id, None)
        raise
    audit.record_view(request, explanation_id, row)
    try:
        data = dicom_sr.explanation_sr(row, dicom_sr.code_schemas(row, serving))
    except dicom_sr.NoDicomSeg as e:
        raise NotFound(str(e)) from None
    return Response(
        data,
        media_type="application/dicom",
        headers={"Content-Disposition": f'attachment; filename="explanation-{row.id}-sr.dcm"'},
    )
