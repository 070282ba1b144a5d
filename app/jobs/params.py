"""What a job may be asked to do: its kind's parameters (train, evaluate, reindex), and the
settings a train or evaluate job may change, each with the range it may take.

One schema for the JSON API, the admin form and the worker (which validates a job's stored
parameters again before training): a value outside these ranges either cannot train (0 epochs,
a batch of one: no negatives), or is beyond what this service's hardware and data make sense of.
Those taken from the data and the text encoder (feature_dim, text_hidden_size, text_encoder,
field_classes) are not settings a job may change.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from model.config import PRESETS
from model.validation import MAX_SLICES_PER_CASE

EPOCHS = (1, 1000)  # at least one pass over the data: a model trained zero steps is no model


class TrainingOverrides(BaseModel):
    """Only the settings given are stored (and applied over the preset); `None` = the preset's."""

    # strict: "10" is not 10, true is not 1; finite floats only
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    # model.config.ModelConfig
    architecture: Literal["mlp", "attn"] | None = None
    embed_dim: int | None = Field(None, ge=8, le=4096)
    max_slices: int | None = Field(None, ge=1, le=MAX_SLICES_PER_CASE)
    n_layers: int | None = Field(None, ge=1, le=24)
    n_heads: int | None = Field(None, ge=1, le=64)
    ff_dim: int | None = Field(None, ge=8, le=16384)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    text_max_length: int | None = Field(None, ge=8, le=512)
    multitask: bool | None = None
    # model.config.TrainConfig
    batch_size: int | None = Field(None, ge=2, le=4096)  # a contrastive batch needs negatives
    epochs: int | None = Field(None, ge=EPOCHS[0], le=EPOCHS[1])
    lr: float | None = Field(None, gt=0.0, le=1.0)
    weight_decay: float | None = Field(None, ge=0.0, le=1.0)
    label_aware: bool | None = None
    reader_targets: bool | None = None
    balanced: bool | None = None
    multitask_weight: float | None = Field(None, ge=0.0, le=100.0)
    balanced_heads: bool | None = None
    val_fraction: float | None = Field(None, ge=0.0, le=0.5)
    patience: int | None = Field(None, ge=0, le=1000)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    device: Literal["cpu", "cuda", "auto"] | None = None

    @model_serializer(mode="wrap")
    def _given_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # stored job parameters list what was asked for, not twenty nulls
        return {key: value for key, value in handler(self).items() if value is not None}

    def given(self) -> dict[str, Any]:
        """The settings to apply over the preset (model.config.preset's keyword overrides)."""
        return self.model_dump()


FOLDS = (2, 10)  # patient-grouped cross-validation folds an evaluate job may ask for
COHORT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Preset = Literal[tuple(PRESETS)]  # type: ignore[valid-type]


class _TrainingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cohort: str = Field(
        default="lidc", pattern=COHORT_NAME, description="Cohort folder in the data directory"
    )
    preset: Preset = Field(default="lidc", description="Named model and training configuration")
    overrides: TrainingOverrides = Field(
        default_factory=TrainingOverrides,
        description='Settings of the preset to change, e.g. {"epochs": 10}',
    )


class TrainParams(_TrainingParams):
    kind: Literal["train"] = "train"
    include_corrections: bool = Field(
        default=True, description="Add cases corrected by accepted radiologist flags"
    )
    activate: bool = Field(default=False, description="Serve the new version once registered")


class EvaluateParams(_TrainingParams):
    kind: Literal["evaluate"] = "evaluate"
    folds: int = Field(default=5, ge=FOLDS[0], le=FOLDS[1], description="Folds, grouped by patient")
    vote_k: int = Field(default=5, ge=1, le=50, description="Texts in the top-k vote")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the fold assignment")


class ReindexParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["reindex"] = "reindex"
    include_corrections: bool = Field(
        default=True, description="Add the texts and cases of accepted corrections"
    )


JobCreate = Annotated[TrainParams | EvaluateParams | ReindexParams, Field(discriminator="kind")]
