"""Flags on explanations, the review queue, and the export of accepted corrections."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from app import audit, csv_export, flagging
from app.deps import Reviewer, SessionDep
from app.explanations import service
from app.payloads import RowId, Text, UtcDatetime
from app.problems import responses
from app.tables import Flag, FlagReason, FlagStatus

router = APIRouter(prefix="/api/v1", tags=["flags"])

ERRORS = responses(401, 403, 404, 422)


class FlagIn(BaseModel):
    field: Text | None = Field(default=None, max_length=64, description="A field to flag")
    text_rank: int | None = Field(default=None, ge=1, description="Or a retrieved text's rank")
    reason: FlagReason
    corrected_value: Text | None = Field(
        default=None,
        max_length=255,
        description="For a field: one of its codes in the model version's schema",
    )
    comment: Text = Field(default="", max_length=2000)


class ReviewIn(BaseModel):
    decision: Literal["accept", "reject"]
    note: Text = Field(default="", max_length=2000)


class FlagOut(BaseModel):
    id: int
    explanation_id: str
    target: str
    field: str | None
    text_rank: int | None
    text: str | None
    reason: FlagReason
    corrected_value: str | None
    comment: str
    model_version: str
    catalog_version: str
    status: FlagStatus
    created_at: UtcDatetime
    reviewed_at: UtcDatetime | None
    review_note: str

    @classmethod
    def from_row(cls, row: Flag) -> FlagOut:
        return cls.model_validate(row, from_attributes=True)


@router.post(
    "/explanations/{explanation_id}/flags",
    status_code=201,
    response_model=FlagOut,
    responses=ERRORS,
)
def create_flag(
    explanation_id: Text, body: FlagIn, request: Request, session: SessionDep, caller: Reviewer
) -> FlagOut:
    """Flag one field (with the correct value where known) or one retrieved text."""
    explanation = service.get_explanation(session, explanation_id)
    flag = flagging.create_flag(
        session,
        explanation,
        caller.user,
        **body.model_dump(),
        audit_event=audit.flag_action(request, "flag.create"),
    )
    return FlagOut.from_row(flag)


@router.get("/flags", response_model=list[FlagOut], responses=ERRORS, operation_id="listFlags")
def review_queue(
    session: SessionDep,
    _: Reviewer,
    status: FlagStatus | None = None,
    field: Annotated[Text | None, Query(max_length=64)] = None,
    model_version: Annotated[Text | None, Query(max_length=64)] = None,
    reason: FlagReason | None = None,
) -> list[FlagOut]:
    """The review queue, newest first, filtered by status, field, model version and reason."""
    rows = flagging.review_queue(
        session, status=status, field=field, model_version=model_version, reason=reason
    )
    return [FlagOut.from_row(row) for row in rows]


@router.post("/flags/{flag_id}/review", response_model=FlagOut, responses=ERRORS)
def review_flag(
    flag_id: RowId, body: ReviewIn, request: Request, session: SessionDep, caller: Reviewer
) -> FlagOut:
    """Accept or reject an open flag, with a note; never one's own flag (403)."""
    flag = flagging.review(
        session,
        flag_id,
        caller.user,
        body.decision == "accept",
        body.note,
        audit.flag_action(request, f"flag.{body.decision}"),
        audit.flag_action(request, f"flag.{body.decision}", "forbidden"),
    )
    return FlagOut.from_row(flag)


CSV_TOO = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}


@router.get("/corrections", responses={**ERRORS, **CSV_TOO}, operation_id="exportCorrections")
def corrections(
    session: SessionDep,
    _: Reviewer,
    format: Literal["json", "csv"] = "json",  # noqa: A002
) -> Response:
    """Accepted corrections for training: label overrides (valid codes of the field only) and
    hard-negative texts. Accepted field flags without a valid code are left out and counted in
    the `X-Skipped-Corrections` header."""
    rows, skipped = flagging.partition_corrections(session)
    headers = {"X-Skipped-Corrections": str(len(skipped))}
    if format == "json":
        return Response(json.dumps(rows), media_type="application/json", headers=headers)
    text = csv_export.to_csv(flagging.CORRECTION_COLUMNS, rows)
    return Response(text, media_type="text/csv; charset=utf-8", headers=headers)
