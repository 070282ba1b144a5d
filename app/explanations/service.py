"""Explaining a case and keeping the record: validation first, then the model, then the row."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from app import paging
from app.errors import Conflict, InvalidInput, NotFound, NotYours, UnsupportedMediaType
from app.i18n import N_, Label
from app.serving import Serving
from app.tables import Explanation
from model.features_io import MAX_ARRAY_BYTES, check_header, csv_header, read_features
from model.inference import (
    MAX_SLICES_PER_CASE,
    CaseExplanation,
    InputError,
    check_slice_count,
    validate_features,
)
from model.segmentation import Segmentation
from model.validation import K_RANGE

SUPPORTED_SUFFIXES = (".npy", ".npz", ".csv")
IDENTITY_FIELDS = ("study_instance_uid", "series_instance_uid", "nodule_label", "patient_pseudonym")


@dataclass(frozen=True)
class ExplanationInput:
    """One case to explain, as read from a request: its features (from a feature file, or
    computed from a segmentation on the server), k, and the optional case identity."""

    features: np.ndarray
    k: int
    segmentation: Segmentation | None = None
    identity: dict[str, str] = field(default_factory=dict)  # IDENTITY_FIELDS that were given
    header: list[str] | None = None  # a .csv's header row: it must name the model's features

    @property
    def kind(self) -> str:
        return "features" if self.segmentation is None else self.segmentation.kind


def features_from_file(
    data: bytes,
    filename: str,
    max_slices: int = MAX_SLICES_PER_CASE,
    max_array_bytes: int = MAX_ARRAY_BYTES,
) -> np.ndarray:
    """An uploaded .npy/.npz/.csv as an array; never unpickles (model.features_io).

    Arrays longer than `max_slices` or declaring more than `max_array_bytes` are refused before
    they are read (the service passes its upload limit: compression buys no room).
    """
    suffix = Path(filename).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnsupportedMediaType(
            N_("unsupported file type %(suffix)s (%(filename)s); use %(supported)s"),
            suffix=repr(suffix or "(none)"),
            filename=repr(filename),
            supported=", ".join(SUPPORTED_SUFFIXES),
        )
    try:
        return read_features(data, filename, max_slices=max_slices, max_array_bytes=max_array_bytes)
    except InputError as e:
        raise InvalidInput(str(e)) from None


def header_of(data: bytes, filename: str) -> list[str] | None:
    """The header row of an uploaded .csv (checked against the model's feature names when the
    case is explained, by the model that explains it); None for other files."""
    return csv_header(data) if Path(filename).suffix.lower() == ".csv" else None


def check_slices(n_slices: int, max_slices: int) -> None:
    try:
        check_slice_count(n_slices, max_slices)
    except InputError as e:
        raise InvalidInput(str(e)) from None


def features_from_rows(
    rows: Sequence[Sequence[float]], max_slices: int = MAX_SLICES_PER_CASE
) -> np.ndarray:
    if len(rows) == 0:
        raise InvalidInput(N_("features have no slices; at least 1 is needed"))
    check_slices(len(rows), max_slices)
    widths = sorted({len(r) for r in rows})
    if len(widths) > 1:
        raise InvalidInput(
            N_("every slice needs the same number of features, got widths %(widths)s"),
            widths=widths,
        )
    return np.asarray(rows, dtype=np.float64)


def check_k(k: int) -> int:
    low, high = K_RANGE
    if not low <= k <= high:
        raise InvalidInput(
            N_("%(name)s must be between %(low)s and %(high)s, got %(got)s"),
            name="k",
            low=low,
            high=high,
            got=k,
        )
    return k


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def check_extractor(serving: Serving, segmentation: Segmentation) -> None:
    """A segmentation's features are only comparable with a model trained on the same code."""
    trained = serving.checkpoint.feature_extractor
    if trained != segmentation.extractor:
        raise Conflict(
            N_(
                "the active model (%(version)s) was trained on features from %(trained)s, but "
                "this server computes %(extractor)s from segmentations; explain it with a model "
                "trained on %(extractor)s"
            ),
            version=serving.model_version,
            trained=trained or Label(N_("no recorded extractor (simulated or uploaded features)")),
            extractor=segmentation.extractor,
        )


def checked_case(serving: Serving, case: ExplanationInput) -> tuple[np.ndarray, int]:
    """The case's validated float32 features and its k, or an AppError naming the problem."""
    if case.segmentation is not None:
        check_extractor(serving, case.segmentation)
    try:
        if case.header is not None and serving.explainer.bounds.names is not None:
            check_header(case.header, serving.explainer.bounds.names)
        array = validate_features(
            case.features, serving.feature_dim, bounds=serving.explainer.bounds
        )
    except InputError as e:
        raise InvalidInput(str(e)) from None
    return array, check_k(case.k)


def explanation_row(
    serving: Serving,
    array: np.ndarray,
    k: int,
    result: CaseExplanation,
    case: ExplanationInput,
    owner_id: int | None,
) -> Explanation:
    """The record of one explained case (validated float32 `array`), not yet added."""
    stored = npy_bytes(array)
    return Explanation(
        id=str(uuid.uuid4()),
        # Of the validated float32 array, so the same case sent as JSON, .csv or .npy matches.
        input_sha256=hashlib.sha256(stored).hexdigest(),
        n_slices=int(array.shape[0]),
        k=k,
        model_version=serving.model_version,
        catalog_version=serving.catalog_version,
        result=result,
        features_npy=stored,
        owner_id=owner_id,
        input_kind=case.kind,
        feature_extractor=None if case.segmentation is None else case.segmentation.extractor,
        outline=None if case.segmentation is None else case.segmentation.outline.to_json(),
        segmentation=None if case.segmentation is None else case.segmentation.reference,
        **case.identity,
    )


NO_EXPLANATION = N_("no explanation with id %(id)s")


def get_explanation(
    session: Session, explanation_id: str, owner_id: int | None = None
) -> Explanation:
    """The stored explanation; with `owner_id`, only if it is theirs (else not found, so ids
    of other people's explanations are not confirmed; NotYours, a NotFound, tells the audit)."""
    row = session.get(Explanation, explanation_id)
    if row is None:
        raise NotFound(NO_EXPLANATION, id=repr(explanation_id))
    if owner_id is not None and row.owner_id != owner_id:
        raise NotYours(NO_EXPLANATION, id=repr(explanation_id))
    return row


def recent_explanations(
    session: Session,
    limit: int,
    owner_id: int | None = None,
    identity: Mapping[str, str] | None = None,
    *,
    since: str = "",
    until: str = "",
    user_id: int | None = None,
    after: str = "",
) -> list[Explanation]:
    """Newest first (ties by id), `limit` rows from the keyset cursor `after` on; with
    `owner_id`, only theirs; `identity` (IDENTITY_FIELDS, already validated) matched exactly;
    `since`/`until` UTC days (both included); `user_id` whoever asked. The stored inputs stay
    in the database (a list never needs them)."""
    query = (
        select(Explanation)
        .options(defer(Explanation.features_npy))
        .order_by(Explanation.created_at.desc(), Explanation.id.desc())
        .limit(limit)
    )
    for owner in (owner_id, user_id):
        if owner is not None:
            query = query.where(Explanation.owner_id == owner)
    for name, value in (identity or {}).items():
        if name not in IDENTITY_FIELDS:
            raise ValueError(f"not an identity field: {name!r}")
        query = query.where(getattr(Explanation, name) == value)
    query = query.where(*paging.in_day_range(Explanation.created_at, since, until))
    if after:
        query = paging.after_time_id(query, Explanation.created_at, Explanation.id, after)
    return list(session.scalars(query))


def stored_features(row: Explanation) -> np.ndarray:
    """The validated features of a stored explanation, to re-explain or review them."""
    return np.load(io.BytesIO(row.features_npy), allow_pickle=False)


def served_answer(evidence: Mapping[str, Any]) -> dict[str, Any]:
    """A field's answer in a stored result, the one the screen, FHIR and DICOM SR lead with:
    its calibrated served read-out; in results from before it, the vote and its share."""
    served = evidence.get("served")
    if served:
        return served
    vote = evidence.get("vote") or {}
    return {
        "value": vote.get("value"),
        "label": vote.get("label"),
        "probability": float(vote.get("share", 0.0)),
        "calibrated": False,
        "distribution": None,
    }
