"""Explaining cases and reading stored explanations."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from app import audit
from app.deps import AnyUser, Principal, ServingDep, SessionDep
from app.errors import NotFound
from app.explanations import batches, dicom_sr, fhir, service, together
from app.explanations.identity import parse_identity
from app.explanations.upload import REQUEST_BODY_OPENAPI, read_explanation_request
from app.hot_path import run_on_hot_path
from app.payloads import (
    BatchCaseError,
    BatchCaseResult,
    ExplanationOut,
    ExplanationSummary,
    Text,
)
from app.problems import Problem, responses
from app.tables import Explanation

router = APIRouter(prefix="/api/v1/explanations", tags=["explanations"])


def _errors(*codes: int) -> dict:
    return responses(*codes)


@router.post(
    "",
    status_code=201,
    response_model=ExplanationOut,
    responses=_errors(401, 403, 413, 415, 422, 503),
    openapi_extra=REQUEST_BODY_OPENAPI,
)
async def create_explanation(
    request: Request, serving: ServingDep, caller: AnyUser
) -> ExplanationOut:
    """Explain one case: a features file (multipart field `file`, plus `k`) or JSON."""
    read_case = await read_explanation_request(request)
    row = await together.explain_for_request(request, serving, read_case, caller.user.id)
    return ExplanationOut.from_row(row)


@router.post(
    "/batch",
    response_model=list[BatchCaseResult | BatchCaseError],
    responses=_errors(401, 403, 413, 415, 422, 503),
    openapi_extra=batches.BATCH_REQUEST_BODY_OPENAPI,
    operation_id="createExplanationBatch",
)
async def create_explanations(
    request: Request, session: SessionDep, serving: ServingDep, caller: AnyUser
) -> JSONResponse:
    """Explain up to 256 cases in one model pass: JSON `cases` or an .npz with one member per
    case. Each case is stored and answered on its own, or refused on its own (`status`,
    `detail`) without failing the others."""
    batch = await batches.read_batch_request(request)
    answers = await run_on_hot_path(
        request,
        batches.explain_batch,
        session,
        serving,
        batch,
        caller.user.id,
        audit.explanation_created(request),
    )
    # Built by the explainer in the documented shape; returned as is, not revalidated.
    return JSONResponse(answers)


@router.get("", response_model=list[ExplanationSummary], responses=_errors(401, 403, 422))
def list_explanations(
    session: SessionDep,
    caller: AnyUser,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    study_instance_uid: Annotated[str | None, Query(max_length=64)] = None,
    patient_pseudonym: Annotated[str | None, Query(max_length=64)] = None,
    nodule_label: Annotated[str | None, Query(max_length=64)] = None,
) -> list[ExplanationSummary]:
    """The most recent explanations, newest first (a clinician's own only); the identity
    filters match exactly and must have the upload's forms (else 422)."""
    identity = parse_identity(
        {
            "study_instance_uid": study_instance_uid,
            "patient_pseudonym": patient_pseudonym,
            "nodule_label": nodule_label,
        }
    )
    rows = service.recent_explanations(session, limit, caller.explanation_owner_filter, identity)
    return [ExplanationSummary.from_row(row) for row in rows]


@router.get(
    "/{explanation_id}", response_model=ExplanationOut, responses=_errors(401, 403, 404, 422)
)
def get_explanation(
    explanation_id: Text, request: Request, session: SessionDep, caller: AnyUser
) -> ExplanationOut:
    """One stored explanation, as it was returned when it was made."""
    return ExplanationOut.from_row(_viewed(explanation_id, request, session, caller))


@router.get(
    "/{explanation_id}/fhir",
    response_class=Response,
    responses={
        200: {
            "content": {fhir.MEDIA_TYPE: {"schema": {"type": "object"}}},
            "description": "A FHIR R4 Bundle (collection): DiagnosticReport, one Observation "
            "per descriptor field, Device, and Patient/ImagingStudy when the identity was given",
        },
        **_errors(401, 403, 404, 422),
    },
)
def get_explanation_fhir(
    explanation_id: Text, request: Request, session: SessionDep, caller: AnyUser
) -> Response:
    """One stored explanation as a FHIR R4 Bundle (research output, status preliminary)."""
    row = _viewed(explanation_id, request, session, caller)
    schema = fhir.export_schema(row.result.get("schema", ""))
    bundle = fhir.explanation_bundle(row, schema)
    return Response(json.dumps(bundle), media_type=fhir.MEDIA_TYPE)


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
            "model": Problem,
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
    row = _viewed(explanation_id, request, session, caller)
    try:
        data = dicom_sr.explanation_sr(row, dicom_sr.code_schemas(row, serving))
    except dicom_sr.NoDicomSeg as e:
        raise NotFound(str(e)) from None
    return Response(
        data,
        media_type="application/dicom",
        headers={"Content-Disposition": f'attachment; filename="explanation-{row.id}-sr.dcm"'},
    )


def _viewed(
    explanation_id: str, request: Request, session: Session, caller: Principal
) -> Explanation:
    """The caller's explanation, its view audited either way (someone else's as denied)."""
    try:
        row = service.get_explanation(session, explanation_id, caller.explanation_owner_filter)
    except NotFound as e:
        audit.record_view(request, explanation_id, None, e)
        raise
    audit.record_view(request, explanation_id, row)
    return row
