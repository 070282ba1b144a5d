"""The one recipe: train a model on a case set and build its checkpoint.

The CLI (`clipmed train`, `clipmed demo`), the service's train job and the test fixtures all
call :func:`train_checkpoint`; what differs between them (the cases, the configs, where progress
goes, the case index settings) is an argument. The case set carries its schema, ids, feature
extractor, feature names and outlines (model.cases.CaseSet), so none of them is passed twice.
"""

from __future__ import annotations

from collections.abc import Callable

from model.cases import CaseSet
from model.catalog import EXACT_BELOW
from model.checkpoint import Checkpoint, build_checkpoint
from model.config import ModelConfig, TrainConfig
from model.encoders import FrozenTextEncoder, TextTokenCache
from model.evaluate import validation_metrics
from model.train import Progress, TrainResult, train

SCORING = "scoring the validation patients"  # the stages after training, as on_stage names them
INDEXING = "building the catalog and the case index"


class UntrainedError(ValueError):
    """Training took no optimiser step: the weights would be the random ones."""


def train_checkpoint(
    cases: CaseSet,
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    encoder: FrozenTextEncoder,
    data: dict,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    case_index: str = "auto",
    case_index_exact_below: int = EXACT_BELOW,
) -> tuple[Checkpoint, TrainResult]:
    """Train on `cases`, score the patients held out for early stopping, build the checkpoint.

    `data` describes the training data in the checkpoint's metadata (cohort, counts, preset).
    The checkpoint is not saved: the caller chooses the folder. Every text (the cases' and the
    zero-shot value texts) goes through the frozen encoder once.
    """
    schema = cases.schema
    value_texts = [t for name in schema.field_names for t in schema.value_texts(name)]
    cache = TextTokenCache(encoder, [*cases.texts(), *value_texts])
    result = train(
        cases,
        mcfg,
        tcfg,
        encoder,
        cache,
        on_progress=on_progress,
        field_classes=schema.class_counts,
    )
    if result.steps == 0:
        raise UntrainedError(
            f"training took no optimiser steps ({tcfg.epochs} epochs over {len(cases)} cases); "
            "no checkpoint was built"
        )
    stage = on_stage or (lambda _: None)
    stage(SCORING)
    metrics = validation_metrics(result.model, cases, tcfg, cache, schema)
    stage(INDEXING)
    checkpoint = build_checkpoint(
        result,
        cases,
        encoder,
        tcfg,
        data,
        metrics,
        cache,
        case_index=case_index,
        case_index_exact_below=case_index_exact_below,
    )
    return checkpoint, result
