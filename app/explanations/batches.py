"""Explaining many cases in one request: read them, explain the valid ones in one model pass,
store each as its own explanation (with its audit event), and answer per case.

A case that is wrong on its own (bad shape, too many slices, NaN) gets its own error in the
answer; only a request that is wrong as a whole (not JSON, not an .npz, too many cases,
over the body size limit) is refused."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from fastapi import Request
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.config import Settings
from app.errors import AppError, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from app.explanations.json_body import large_body_turn, parse_json
from app.explanations.service import (
    ExplanationInput,
    check_k,
    check_slices,
    checked_case,
    explanation_row,
    features_from_rows,
)
from app.explanations.together import explain_each
from app.explanations.upload import validation_message
from app.payloads import ExplanationRequest
from app.serving import Serving
from app.tables import AuditEvent, Explanation
from model.features_io import TooManyCases, read_npz_cases
from model.inference import InputError

MAX_BATCH_CASES = 256
DEFAULT_K = 5


@dataclass(frozen=True)
class BatchCase:
    """One case of a batch as read: its features, or the error that refuses it alone."""

    name: str | None
    features: np.ndarray | None = None
    error: AppError | None = None


@dataclass(frozen=True)
class BatchInput:
    cases: list[BatchCase]
    k: int


BATCH_REQUEST_BODY_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["cases"],
                    "properties": {
                        "cases": {
                            "type": "array",
                            "maxItems": MAX_BATCH_CASES,
                            "items": {
                                "type": "object",
                                "required": ["features"],
                                "properties": {
                                    "features": ExplanationRequest.model_json_schema()[
                                        "properties"
                                    ]["features"],
                                    "name": {"type": "string", "maxLength": 128},
                                },
                            },
                        },
                        "k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
                    },
                },
                "examples": {
                    "features": {
                        "summary": "Two cases of per-slice features",
                        "value": {
                            "cases": [
                                {"name": "nodule-1", "features": [[0.5] * 4, [0.4] * 4]},
                                {"name": "nodule-2", "features": [[0.1] * 4]},
                            ],
                            "k": 5,
                        },
                    }
                },
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": f"An .npz with one 2-D numeric member per case (at "
                            f"most {MAX_BATCH_CASES}); the member's name is the case's name",
                        },
                        "k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
                    },
                }
            },
        },
    }
}


async def read_batch_request(request: Request) -> BatchInput:
    """The cases in the request, or an AppError naming what is wrong with it as a whole."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    settings: Settings = request.app.state.settings
    if content_type == "application/json":
        async with large_body_turn(request):  # memory: a few large bodies at a time
            body = await request.body()
            return await run_in_threadpool(_read_json, body, settings.max_slices_per_upload)
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=2)
        except StarletteHTTPException as e:
            raise InvalidInput(f"could not read the multipart body: {e.detail}") from None
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidInput("the multipart body needs an .npz of cases in field 'file'")
            if not (upload.filename or "").lower().endswith(".npz"):
                raise UnsupportedMediaType(
                    f"a batch file must be an .npz (one member per case), got {upload.filename!r}"
                )
            k = _form_k(form.get("k"))
            data = await upload.read()
        finally:
            await form.close()
        return await run_in_threadpool(_read_npz, data, k, settings)
    raise UnsupportedMediaType(
        f"unsupported content type {content_type or '(none)'!r}; send application/json with "
        "'cases', or multipart/form-data with an .npz in field 'file'"
    )


def _form_k(raw: object) -> int:
    if raw is None or raw == "":
        return DEFAULT_K
    if isinstance(raw, str) and raw.strip().isascii() and raw.strip().lstrip("-").isdigit():
        return check_k(int(raw))
    raise InvalidInput(f"k must be an integer, got {raw!r}")


def _read_npz(data: bytes, k: int, settings: Settings) -> BatchInput:
    try:
        members = read_npz_cases(
            data,
            max_cases=MAX_BATCH_CASES,
            max_slices=settings.max_slices_per_upload,
            max_total_bytes=settings.max_upload_bytes,  # compression buys no room
        )
    except TooManyCases as e:
        raise PayloadTooLarge(str(e)) from None
    except InputError as e:
        raise InvalidInput(str(e)) from None
    return BatchInput(
        [
            BatchCase(name, error=InvalidInput(str(read)))
            if isinstance(read, InputError)
            else BatchCase(name, read)
            for name, read in members
        ],
        k,
    )


def _read_json(body: bytes, max_slices: int) -> BatchInput:
    payload = parse_json(body)  # nesting bounded first: 10,000 brackets deep was a 500
    if not isinstance(payload, dict) or not isinstance(payload.get("cases"), list):
        raise InvalidInput("the body needs 'cases': a list of {'features': [[...], ...]}")
    if extra := sorted(set(payload) - {"cases", "k"}):
        raise InvalidInput(f"unknown keys {extra}; a batch takes 'cases' and 'k'")
    raw_k = payload.get("k", DEFAULT_K)
    if isinstance(raw_k, bool) or not isinstance(raw_k, int):
        raise InvalidInput(f"k must be an integer, got {raw_k!r}")
    k = check_k(raw_k)
    cases = payload["cases"]
    if len(cases) > MAX_BATCH_CASES:
        raise PayloadTooLarge(f"{len(cases)} cases; at most {MAX_BATCH_CASES} in one batch")
    if not cases:
        raise InvalidInput("'cases' is empty; at least 1 case is needed")
    return BatchInput([_json_case(case, max_slices) for case in cases], k)


def _json_case(case: object, max_slices: int) -> BatchCase:
    name = case.get("name") if isinstance(case, dict) else None
    if name is not None and (not isinstance(name, str) or len(name) > 128):
        return BatchCase(None, error=InvalidInput("a case's name must be a string of at most 128"))
    try:
        if not isinstance(case, dict) or set(case) - {"features", "name"}:
            raise InvalidInput("a case is {'features': [[...], ...]} with an optional 'name'")
        rows = case.get("features")
        if isinstance(rows, list):  # before pydantic copies every value of a too-long case
            check_slices(len(rows), max_slices)
        request = ExplanationRequest.model_validate({"features": rows})
        return BatchCase(name, features_from_rows(request.features, max_slices))
    except ValidationError as e:
        return BatchCase(name, error=InvalidInput(validation_message(e)))
    except InvalidInput as e:
        return BatchCase(name, error=e)


def explain_batch(
    session: Session,
    serving: Serving,
    batch: BatchInput,
    owner_id: int | None = None,
    audit_event: Callable[[Explanation], AuditEvent] | None = None,
) -> list[dict]:
    """Checks each case as a single explanation's case is checked (the checkpoint's training
    ranges included), explains the valid ones in one pass with this one Serving, stores them
    (each with its audit event, all in one transaction) and answers per case, in order."""
    answers: list[dict | None] = [None] * len(batch.cases)
    valid: list[tuple[int, np.ndarray]] = []

    def refuse(index: int, error: AppError) -> None:
        answers[index] = {
            "index": index,
            "name": batch.cases[index].name,
            "status": error.status_code,
            "detail": error.message,
        }

    for index, case in enumerate(batch.cases):
        if case.error is not None:
            refuse(index, case.error)
            continue
        assert case.features is not None  # a BatchCase holds its features or its error
        try:
            valid.append(
                (index, checked_case(serving, ExplanationInput(case.features, batch.k))[0])
            )
        except AppError as e:
            refuse(index, e)
    results = explain_each(serving, [array for _, array in valid], batch.k)
    for (index, array), result in zip(valid, results, strict=True):
        if isinstance(result, AppError):
            refuse(index, result)
            continue
        row = explanation_row(
            serving, array, batch.k, result, ExplanationInput(array, batch.k), owner_id
        )
        session.add(row)
        if audit_event is not None:
            session.add(audit_event(row))
        answers[index] = {
            "index": index,
            "name": batch.cases[index].name,
            "id": row.id,
            "explanation": result,
        }
    session.commit()
    return [answer for answer in answers if answer is not None]
