"""Reading an explanation request: a multipart file upload or a JSON body, nothing else."""

from __future__ import annotations

import json

import numpy as np
from fastapi import Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.config import Settings
from app.errors import InvalidInput, UnsupportedMediaType
from app.explaining import check_k, check_slices, features_from_file, features_from_rows
from app.schemas import ExplanationRequest

DEFAULT_K = 5

# OpenAPI for the body, which the route reads itself (to pick the parser by content type).
REQUEST_BODY_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": ".npy (2-D numeric), .npz (member 'features') or "
                            ".csv (one row per slice)",
                        },
                        "k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
                    },
                }
            },
            "application/json": {"schema": ExplanationRequest.model_json_schema()},
        },
    }
}


async def read_explanation_request(request: Request) -> tuple[np.ndarray, int]:
    """(features, k) from the request, or an AppError naming what is wrong."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    settings: Settings = request.app.state.settings
    if content_type == "multipart/form-data":
        return await _read_multipart(request, settings)
    if content_type == "application/json":
        # parsing up to max_upload_bytes of JSON is CPU work: off the event loop
        body = await request.body()
        return await run_in_threadpool(_read_json, body, settings.max_slices_per_upload)
    raise UnsupportedMediaType(
        f"unsupported content type {content_type or '(none)'!r}; send multipart/form-data "
        "with a file in field 'file', or application/json with 'features'"
    )


async def _read_multipart(request: Request, settings: Settings) -> tuple[np.ndarray, int]:
    try:
        form = await request.form(max_files=1, max_fields=4)
    except StarletteHTTPException as e:  # malformed multipart, too many parts
        raise InvalidInput(f"could not read the multipart body: {e.detail}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("the multipart body needs a features file in field 'file'")
        raw_k = form.get("k")
        if raw_k is None or raw_k == "":
            k = DEFAULT_K
        elif isinstance(raw_k, str) and raw_k.strip().lstrip("-").isdigit():
            k = int(raw_k)
        else:
            raise InvalidInput(f"k must be an integer, got {raw_k!r}")
        check_k(k)
        data = await upload.read()
        features = await run_in_threadpool(
            features_from_file,
            data,
            upload.filename or "",
            settings.max_slices_per_upload,
            settings.max_upload_bytes,  # what it may inflate to: compression buys no room
        )
    finally:
        await form.close()
    return features, k


def _read_json(body: bytes, max_slices: int) -> tuple[np.ndarray, int]:
    try:
        payload = json.loads(body)  # json.loads, not pydantic: NaN/Infinity reach the check
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"the body is not valid JSON: {e}") from None
    rows = payload.get("features") if isinstance(payload, dict) else None
    if isinstance(rows, list):  # before pydantic copies every value of a too-long case
        check_slices(len(rows), max_slices)
    try:
        request = ExplanationRequest.model_validate(payload)
    except ValidationError as e:
        raise InvalidInput(validation_message(e)) from None
    return features_from_rows(request.features, max_slices), request.k


def validation_message(error: ValidationError, limit: int = 3) -> str:
    parts = [
        f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()[:limit]
    ]
    more = error.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
