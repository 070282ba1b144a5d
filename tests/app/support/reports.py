"""Evaluation reports for the page tests: real report folders written by the project's own
evaluate code, and their rows as the evaluate job stores them."""

from __future__ import annotations

from pathlib import Path

from support.checkpoints import FEATURE_DIM


def build_report_folder(folder: Path, encoder, epochs: int = 1, folds: int = 2) -> dict:
    """A real, tiny cross-validation report of one simulated cohort (always the same patients
    and split) written by the project's own evaluate code into `folder`; returns the summary as
    the evaluate job stores it (field -> method -> median macro-F1)."""
    from model.config import preset
    from model.datasets.simulated import simulate_cohort
    from model.evaluate import cross_validate
    from model.report import write_report

    cohort = simulate_cohort(40, None, seed=3, feature_dim=FEATURE_DIM, signal=2.0)
    mcfg, tcfg = preset(
        "lidc", epochs=epochs, val_fraction=0.0, patience=0, embed_dim=32, ff_dim=64, batch_size=16
    )
    result = cross_validate(cohort, mcfg, tcfg, encoder, folds=folds)
    write_report(result, cohort, mcfg, tcfg, folder, "lidc")
    summary: dict[str, dict[str, float]] = {}
    medians = result.metrics.groupby(["field", "method"]).macro_f1.median()
    for (field, method), value in medians.items():
        summary.setdefault(str(field), {})[str(method)] = round(float(value), 4)
    return summary


def add_report_row(
    sessions,
    folder: Path,
    summary: dict,
    cohort: str,
    folds: int,
    job_id: int | None = None,
    simulated: bool = True,
) -> int:
    """An evaluation report row (as the evaluate job stores one) for a report folder."""
    from app.tables import EvaluationReport

    with sessions() as session:
        row = EvaluationReport(
            job_id=job_id,
            cohort=cohort,
            simulated=simulated,
            preset="lidc",
            folds=folds,
            model_config={"architecture": "mlp"},
            train_config={"epochs": 1},
            summary=summary,
            path=str(folder),
        )
        session.add(row)
        session.commit()
        return row.id
