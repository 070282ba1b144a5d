"""Reading an explanation request: a multipart file upload or a JSON body, nothing else.

The file or body is a feature array or a segmentation (contours JSON, a mask volume, NIfTI,
DICOM SEG); a segmentation's features are computed here, by model.segmentation, and the case
carries the segmentation along to be stored and drawn."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial

from fastapi import Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.config import Settings
from app.errors import InvalidInput, UnsupportedMediaType
from app.explanations.identity import FIELDS as IDENTITY_FIELDS
from app.explanations.identity import parse_identity
from app.explanations.json_body import large_body_turn, read_json_body
from app.explanations.service import (
    K_RANGE,
    ExplanationInput,
    check_k,
    check_slices,
    features_from_file,
    features_from_rows,
    header_of,
)
from app.i18n import N_
from app.parsing import parse_int
from app.payloads import ContoursRequest, ExplanationRequest
from model.inference import InputError
from model.segmentation import from_contours, parse_spacing
from model.segmentation_files import read_segmentation

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
                            "description": "Features: .npy (2-D numeric), .npz (member "
                            "'features') or .csv (one row per slice). Or a segmentation: "
                            "contours .json, a mask .npy/.npz (3-D [slices, rows, cols], 0/1; "
                            "spacing in 'spacing_mm' or an .npz member 'spacing_mm'), NIfTI "
                            ".nii/.nii.gz, or a DICOM SEG .dcm with one segment",
                        },
                        "k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
                        "spacing_mm": {
                            "type": "string",
                            "description": "A mask's voxel spacing in mm: slice, row, column",
                            "example": "2.5,0.7,0.7",
                        },
                        **{name: {"type": "string", "maxLength": 64} for name in IDENTITY_FIELDS},
                    },
                }
            },
            "application/json": {
                "schema": {
                    "oneOf": [
                        ExplanationRequest.model_json_schema(),
                        ContoursRequest.model_json_schema(),
                    ]
                },
                "examples": {
                    "features": {
                        "summary": "Per-slice features",
                        "value": {"features": [[0.5] * 4, [0.4] * 4], "k": 5},
                    },
                    "contours": {
                        "summary": "A nodule's contours in mm (patient frame)",
                        "value": {
                            "slice_thickness_mm": 2.5,
                            "pixel_spacing_mm": 0.7,
                            "slices": [
                                {
                                    "z_mm": -120.0,
                                    "contours": [
                                        [[10.0, 10.0], [16.0, 10.0], [16.0, 15.0], [10.0, 15.0]]
                                    ],
                                },
                                {
                                    "z_mm": -117.5,
                                    "contours": [[[11.0, 11.0], [15.0, 11.0], [13.0, 14.0]]],
                                },
                            ],
                            "k": 5,
                            "study_instance_uid": "1.2.826.0.1.3680043.8.498.1",
                        },
                    },
                },
            },
        },
    }
}


# The case of a request, decoded from its body when called (CPU work, for the thread pool);
# raises an AppError naming what is wrong.
CaseReader = Callable[[], ExplanationInput]


async def read_explanation_request(request: Request) -> CaseReader:
    """The request's body, read: a function that decodes its case, or an AppError naming what
    is wrong with the request itself. The explanation service calls the function in the thread
    that explains the case, so a small case costs one thread-pool hop, not two; a large body
    (LARGE_BODY_BYTES) is decoded here, inside its turn, so that it is never held in memory
    both as bytes and decoded outside the turns."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    settings: Settings = request.app.state.settings
    if content_type == "multipart/form-data":
        # the same turns: a large mask or NIfTI is decoded and measured (labelled, inflated)
        # while it is read, at a multiple of its size (bench/hostile_memory.py, segmentation)
        async with large_body_turn(request) as large:
            reader = await _read_multipart(request, settings)
            return await _decoded(reader) if large else reader
    if content_type == "application/json":
        async with large_body_turn(request) as large:  # memory: a few large bodies at a time
            body = await request.body()
            # parsing up to max_upload_bytes of JSON is CPU work: off the event loop
            reader = partial(_read_json, body, settings.max_slices_per_upload)
            return await _decoded(reader) if large else reader
    raise UnsupportedMediaType(
        N_(
            "unsupported content type %(type)s; send multipart/form-data with a file in field "
            "'file', or application/json with 'features' or 'slices'"
        ),
        type=repr(content_type or "(none)"),
    )


async def _decoded(reader: CaseReader) -> CaseReader:
    case = await run_in_threadpool(reader)
    return lambda: case


async def _read_multipart(request: Request, settings: Settings) -> CaseReader:
    try:
        form = await request.form(max_files=1, max_fields=4 + len(IDENTITY_FIELDS))
    except StarletteHTTPException as e:  # malformed multipart, too many parts
        raise InvalidInput(
            N_("could not read the multipart body: %(detail)s"), detail=e.detail
        ) from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput(
                N_("the multipart body needs a features or segmentation file in field 'file'")
            )
        raw_k = form.get("k")
        if raw_k is None or raw_k == "":
            k = DEFAULT_K
        elif isinstance(raw_k, str):
            k = parse_int(raw_k, "k", *K_RANGE)
        else:
            raise InvalidInput(N_("k must be a form field, not a file"))
        texts = {name: value for name, value in form.multi_items() if isinstance(value, str)}
        identity = parse_identity(texts)
        data = await upload.read()
        return partial(
            _read_file, data, upload.filename or "", texts.get("spacing_mm"), k, identity, settings
        )
    finally:
        await form.close()


def _read_file(
    data: bytes,
    filename: str,
    spacing_text: str | None,
    k: int,
    identity: dict[str, str],
    settings: Settings,
) -> ExplanationInput:
    try:
        segmentation = read_segmentation(
            data,
            filename,
            parse_spacing(spacing_text),
            max_voxels=settings.max_mask_voxels,
            max_slices=settings.max_slices_per_upload,
            max_bytes=settings.max_upload_bytes,  # what it may inflate to
        )
    except InputError as e:
        raise InvalidInput(str(e)) from None
    if segmentation is not None:
        identity = {**_seg_identity(segmentation.reference), **identity}  # given ones win
        if not settings.keep_seg_patient and segmentation.reference:
            segmentation.reference["patient_study"] = {}
        return ExplanationInput(segmentation.features, k, segmentation, identity)
    features = features_from_file(
        data,
        filename,
        settings.max_slices_per_upload,
        settings.max_upload_bytes,  # what it may inflate to: compression buys no room
    )
    return ExplanationInput(features, k, None, identity, header_of(data, filename))


def _seg_identity(reference: dict | None) -> dict[str, str]:
    """A DICOM SEG's study and image series (the CT it was drawn on; the SEG's own series when
    it names no single one) as the case identity, where they are valid UIDs."""
    if not reference:
        return {}
    sources = reference.get("source_series") or []
    series = sources[0].get("series_instance_uid") if len(sources) == 1 else None
    found = {
        "study_instance_uid": reference.get("study_instance_uid"),
        "series_instance_uid": series or reference.get("series_instance_uid"),
    }
    identity = {}
    for name, value in found.items():
        with contextlib.suppress(InvalidInput):  # a malformed UID is no reason to refuse
            identity.update(parse_identity({name: value}))
    return identity


def _read_json(body: bytes, max_slices: int) -> ExplanationInput:
    # nesting bounded; a plain features array read by numpy, not as Python floats
    payload, features = read_json_body(body, max_slices)
    if isinstance(payload, dict) and "slices" in payload:
        return _read_contours(payload, max_slices)
    rows = payload.get("features") if isinstance(payload, dict) else None
    if isinstance(rows, list):  # before pydantic copies every value of a too-long case
        check_slices(len(rows), max_slices)
    identity = parse_identity(payload) if isinstance(payload, dict) else {}
    if isinstance(payload, dict):
        payload = {key: v for key, v in payload.items() if key not in IDENTITY_FIELDS}
        if features is not None:
            payload["features"] = []  # read and checked apart already
    try:
        request = ExplanationRequest.model_validate(payload)
    except ValidationError as e:
        raise InvalidInput(validation_message(e)) from None
    if features is None:
        features = features_from_rows(request.features, max_slices)
    return ExplanationInput(features, request.k, None, identity)


def _read_contours(payload: dict, max_slices: int) -> ExplanationInput:
    """A contours document, with k and the identity fields beside its own keys."""
    raw_k = payload.get("k", DEFAULT_K)
    if isinstance(raw_k, bool) or not isinstance(raw_k, int):
        raise InvalidInput(f"k must be an integer, got {raw_k!r}")
    k = check_k(raw_k)
    identity = parse_identity(payload)
    document = {key: v for key, v in payload.items() if key not in ("k", *IDENTITY_FIELDS)}
    try:
        segmentation = from_contours(document, max_slices)
    except InputError as e:
        raise InvalidInput(str(e)) from None
    return ExplanationInput(segmentation.features, k, segmentation, identity)


def validation_message(error: ValidationError, limit: int = 3) -> str:
    parts = [
        f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()[:limit]
    ]
    more = error.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
