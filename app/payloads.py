"""Request and response bodies of the JSON API (what OpenAPI documents)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.db import as_utc
from app.explanations.service import K_RANGE
from app.jobs.queue import fold_progress
from app.tables import EvaluationReport, Explanation, Job, ModelEvent, ModelVersion

UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


# Text a request hands to the database. PostgreSQL can neither store nor compare a NUL character
# (its driver raises: a 500), so one is refused as invalid input, on SQLite too.
Text = Annotated[str, AfterValidator(no_nul)]

# A row id in a URL. The id columns are 32-bit integers (PostgreSQL `integer`): a number outside
# that range names no row, and past 64 bits SQLite's driver cannot even bind it (a 500), so it is
# refused as invalid input instead.
RowId = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


class ExplanationRequest(BaseModel):
    features: list[list[float]] = Field(description="One row of numbers per slice")
    k: int = Field(default=5, ge=K_RANGE[0], le=K_RANGE[1], description="Distinct texts to return")


class ContourSlice(BaseModel):
    z_mm: float = Field(description="The slice's position along the patient's z axis, in mm")
    contours: list[list[list[float]]] = Field(
        description="Outer contours: each a list of [x_mm, y_mm] points (at least 3)"
    )
    holes: list[list[list[float]]] = Field(
        default=[], description="Regions cut out of the contours, same form"
    )


class ContoursRequest(BaseModel):
    """A nodule's segmentation as contours in mm, the form LIDC readers and RTSTRUCT use.

    Contours are rasterised on a grid of `pixel_spacing_mm` as the LIDC importer rasterises a
    read (outline pixels outside the nodule), then measured by the server's feature extractor.
    """

    slice_thickness_mm: float = Field(gt=0, description="Slice thickness in mm")
    pixel_spacing_mm: float = Field(
        default=0.7, gt=0, description="Rasterisation grid in mm (default: LIDC's median)"
    )
    slices: list[ContourSlice] = Field(min_length=1)
    k: int = Field(default=5, ge=K_RANGE[0], le=K_RANGE[1], description="Distinct texts to return")
    study_instance_uid: str | None = Field(default=None, max_length=64)
    series_instance_uid: str | None = Field(default=None, max_length=64)
    nodule_label: str | None = Field(default=None, max_length=64)
    patient_pseudonym: str | None = Field(default=None, max_length=64)


class SliceCounts(BaseModel):
    received: int
    used: int
    subsampled: bool = Field(description="More slices were sent than the model takes")


class RetrievedText(BaseModel):
    rank: int
    text: str
    similarity: float
    training_cases: int
    descriptors: dict[str, str | None]


class FieldVote(BaseModel):
    value: str | None
    label: str | None
    share: float
    tally: dict[str, float]


class FieldTop1(BaseModel):
    value: str | None
    label: str | None


class FieldServed(BaseModel):
    """The field's answer: one read-out, the same in the service, reports and exports."""

    value: str | None
    label: str | None
    probability: float = Field(
        description="Calibrated on validation patients: answers stated at 80% are right about "
        "80% of the time (uncalibrated vote share when `calibrated` is false)"
    )
    calibrated: bool
    distribution: dict[str, float] | None = None


class FieldEvidence(BaseModel):
    field: str
    label: str
    served: FieldServed | None = Field(
        default=None, description="The answer to lead with (absent in older explanations)"
    )
    vote: FieldVote
    top1: FieldTop1
    zero_shot: dict[str, float]
    head: dict[str, float] | None = None


class SimilarCase(BaseModel):
    case_id: str
    patient_id: str
    similarity: float
    descriptors: dict[str, str | None]


class SliceWeight(BaseModel):
    slice: int
    weight: float


class ExplanationResult(BaseModel):
    model_version: str
    catalog_version: str
    schema_name: str = Field(alias="schema", serialization_alias="schema")
    simulated: bool
    k: int
    slices: SliceCounts
    texts: list[RetrievedText]
    fields: list[FieldEvidence]
    slice_attention: list[SliceWeight] | None
    similar_cases: list[SimilarCase]
    low_confidence: bool
    low_confidence_reasons: list[str]


class CaseIdentity(BaseModel):
    """Optional identity given on upload."""

    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    nodule_label: str | None = None
    patient_pseudonym: str | None = None

    @classmethod
    def from_row(cls, row: Explanation) -> CaseIdentity:
        return cls(
            study_instance_uid=row.study_instance_uid,
            series_instance_uid=row.series_instance_uid,
            nodule_label=row.nodule_label,
            patient_pseudonym=row.patient_pseudonym,
        )


class ExplanationOut(BaseModel):
    id: str
    created_at: UtcDatetime
    input_sha256: str
    n_slices: int
    k: int
    model_version: str
    catalog_version: str
    input_kind: str = Field(
        description="What was uploaded: features, contours, mask, nifti or dicom-seg"
    )
    feature_extractor: str | None = Field(
        description="For segmentations: the code (name/version) that computed the features"
    )
    identity: CaseIdentity
    outline: dict[str, Any] | None = Field(
        description="For segmentations: the nodule's contours per slice in mm (the contours "
        "JSON form), as drawn on the result page"
    )
    explanation: ExplanationResult

    @classmethod
    def from_row(cls, row: Explanation) -> ExplanationOut:
        return cls(
            id=row.id,
            created_at=row.created_at,
            input_sha256=row.input_sha256,
            n_slices=row.n_slices,
            k=row.k,
            model_version=row.model_version,
            catalog_version=row.catalog_version,
            input_kind=row.input_kind,
            feature_extractor=row.feature_extractor,
            identity=CaseIdentity.from_row(row),
            outline=row.outline,
            explanation=ExplanationResult.model_validate(row.result),
        )


class ExplanationSummary(BaseModel):
    id: str
    created_at: UtcDatetime
    n_slices: int
    k: int
    model_version: str
    catalog_version: str
    top_text: str | None = Field(description="The best-ranked retrieved text")
    input_kind: str = Field(description="What was uploaded: features or a segmentation kind")
    identity: CaseIdentity

    @classmethod
    def from_row(cls, row: Explanation) -> ExplanationSummary:
        texts = row.result.get("texts") or []
        return cls(
            id=row.id,
            created_at=row.created_at,
            n_slices=row.n_slices,
            k=row.k,
            model_version=row.model_version,
            catalog_version=row.catalog_version,
            top_text=texts[0]["text"] if texts else None,
            input_kind=row.input_kind,
            identity=CaseIdentity.from_row(row),
        )


class ModelVersionOut(BaseModel):
    version: str
    catalog_version: str
    # Where the checkpoint lies on the server: shown to admins only (a filesystem layout helps
    # an attacker and tells a clinician nothing).
    path: str | None = Field(default=None, description="checkpoint folder; admins only")
    created_at: UtcDatetime
    is_active: bool
    feature_dim: int | None
    max_slices: int | None
    schema_name: str | None
    metrics: dict

    @classmethod
    def from_row(cls, row: ModelVersion, with_path: bool = True) -> ModelVersionOut:
        """`with_path=False` leaves `path` unset, so the answer (exclude_unset) has no key."""
        out = cls(
            version=row.version,
            catalog_version=row.catalog_version,
            created_at=row.created_at,
            is_active=row.is_active,
            feature_dim=row.config.get("feature_dim"),
            max_slices=row.config.get("max_slices"),
            schema_name=row.schema_.get("name"),
            metrics=row.metrics,
        )
        if with_path:
            out.path = row.path
        return out


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="'ready' or 'not ready'")
    model_version: str | None = None
    catalog_version: str | None = None
    problems: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Admin jobs
# ---------------------------------------------------------------------------------------------
class JobChild(BaseModel):
    id: int
    kind: str
    status: str
    progress: float
    message: str


class JobOut(BaseModel):
    id: int
    kind: str
    params: dict[str, Any]
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    progress: float = Field(description="0 to 1")
    message: str
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    max_attempts: int
    cancel_requested: bool
    parent_id: int | None
    requested_by: int | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    heartbeat_at: UtcDatetime | None
    children: list[JobChild] = Field(default_factory=list)
    log: str | None = Field(default=None, description="The log's tail (one job only)")

    @classmethod
    def from_row(cls, job: Job, children: list[Job] = (), with_log: bool = False) -> JobOut:
        # A cross-validation waiting for its folds: their mean progress and what each running
        # fold is doing, rather than the parent's "waiting for N fold jobs".
        folds = fold_progress(job, children)
        return cls(
            id=job.id,
            kind=job.kind,
            params=job.params,
            status=job.status.value,
            progress=folds.mean if folds else job.progress,
            message=folds.summary if folds else job.message,
            result=job.result,
            error=job.error,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            cancel_requested=job.cancel_requested,
            parent_id=job.parent_id,
            requested_by=job.requested_by,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            heartbeat_at=job.heartbeat_at,
            children=[
                JobChild(
                    id=c.id,
                    kind=c.kind,
                    status=c.status.value,
                    progress=c.progress,
                    message=c.message,
                )
                for c in children
            ],
            log=job.log if with_log else None,
        )


class ModelEventOut(BaseModel):
    at: UtcDatetime
    action: str
    version: str
    catalog_version: str
    previous_version: str | None
    previous_catalog_version: str | None
    actor: str | None
    job_id: int | None

    @classmethod
    def from_row(cls, row: ModelEvent) -> ModelEventOut:
        return cls.model_validate(row, from_attributes=True)


class ReportOut(BaseModel):
    id: int
    created_at: UtcDatetime
    job_id: int | None
    cohort: str
    simulated: bool
    preset: str
    folds: int
    model_config_: dict[str, Any] = Field(alias="model_config")
    train_config: dict[str, Any]
    summary: dict[str, Any] = Field(description="field -> method -> median macro-F1 across folds")

    model_config = ConfigDict(populate_by_name=True)

    @classmethod
    def from_row(cls, row: EvaluationReport) -> ReportOut:
        return cls(
            id=row.id,
            created_at=row.created_at,
            job_id=row.job_id,
            cohort=row.cohort,
            simulated=row.simulated,
            preset=row.preset,
            folds=row.folds,
            model_config=row.model_config,
            train_config=row.train_config,
            summary=row.summary,
        )


class BatchCaseResult(BaseModel):
    """One explained case of a batch, stored as explanation `id`."""

    index: int = Field(description="The case's position in the request")
    name: str | None = Field(description="Its name: the .npz member, or the JSON case's 'name'")
    id: str
    explanation: ExplanationResult


class BatchCaseError(BaseModel):
    """One refused case of a batch; the others are explained regardless."""

    index: int
    name: str | None
    status: int = Field(description="The status a single upload of this case would get")
    detail: str
