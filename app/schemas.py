"""Request and response bodies of the JSON API (what OpenAPI documents)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from app.explaining import K_RANGE
from app.models import Explanation, ModelVersion


def as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]


class ErrorResponse(BaseModel):
    detail: str = Field(description="What is wrong, in words")
    code: str = Field(description="Machine-readable kind of error")


class ExplanationRequest(BaseModel):
    features: list[list[float]] = Field(description="One row of numbers per slice")
    k: int = Field(default=5, ge=K_RANGE[0], le=K_RANGE[1], description="Distinct texts to return")


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


class FieldEvidence(BaseModel):
    field: str
    label: str
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


class ExplanationOut(BaseModel):
    id: str
    created_at: UtcDatetime
    input_sha256: str
    n_slices: int
    k: int
    model_version: str
    catalog_version: str
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
        )


class ModelVersionOut(BaseModel):
    version: str
    catalog_version: str
    path: str
    created_at: UtcDatetime
    is_active: bool
    feature_dim: int | None
    max_slices: int | None
    schema_name: str | None
    metrics: dict

    @classmethod
    def from_row(cls, row: ModelVersion) -> ModelVersionOut:
        return cls(
            version=row.version,
            catalog_version=row.catalog_version,
            path=row.path,
            created_at=row.created_at,
            is_active=row.is_active,
            feature_dim=row.config.get("feature_dim"),
            max_slices=row.config.get("max_slices"),
            schema_name=row.schema_.get("name"),
            metrics=row.metrics,
        )


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="'ready' or 'not ready'")
    model_version: str | None = None
    catalog_version: str | None = None
    problems: list[str] = Field(default_factory=list)
