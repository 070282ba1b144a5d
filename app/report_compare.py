"""Two evaluation reports side by side, so an admin can judge a retraining before activating
it: per field and method the median macro-F1 of each report (from its metrics.csv, fold by
fold) and the difference b − a, and the per-fold pairs behind those medians. Only reports of
one cohort with the same folds compare: a difference across cohorts or splits means nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy.orm import Session

from app.errors import InvalidInput, NotFound
from app.reports import get_report, method_name
from app.tables import EvaluationReport
from model.evaluate import BASELINES, MODEL_METHODS

COLUMNS = ("fold", "field", "method", "macro_f1")


@dataclass(frozen=True)
class ComparedScore:
    field: str
    method: str
    a: float  # median macro-F1 across report a's folds
    b: float

    @property
    def difference(self) -> float:
        return self.b - self.a

    @property
    def method_name(self) -> str:
        return method_name(self.method)


@dataclass(frozen=True)
class Comparison:
    a: EvaluationReport
    b: EvaluationReport
    folds: list[int]
    scores: list[ComparedScore]
    per_fold: pd.DataFrame  # fold, field, method, a, b: the pairs behind the medians

    @property
    def figure_method(self) -> str:
        """The method the paired figure shows: the served read-out, else the first one."""
        methods = list(dict.fromkeys(s.method for s in self.scores))
        return "served" if "served" in methods else methods[0]

    @property
    def figure_method_name(self) -> str:
        return method_name(self.figure_method)


def fold_metrics(report: EvaluationReport) -> pd.DataFrame:
    """The report's per-fold macro-F1 (fold, field, method, macro_f1) from its metrics.csv."""
    path = Path(report.path) / "metrics.csv"
    if not path.is_file():
        raise NotFound(f"report {report.id} has no metrics.csv (its folder {report.path} moved?)")
    try:
        table = pd.read_csv(path, usecols=list(COLUMNS))
    except (ValueError, pd.errors.ParserError) as e:
        raise InvalidInput(f"report {report.id}'s metrics.csv cannot be read: {e}") from None
    table = table.dropna(subset=["macro_f1"])
    return table.astype({"fold": int, "field": str, "method": str, "macro_f1": float})


def compare_reports(session: Session, a_id: int, b_id: int) -> Comparison:
    """NotFound for a missing report or metrics file; InvalidInput when the two are not of the
    same cohort and folds."""
    a, b = get_report(session, a_id), get_report(session, b_id)
    if a.cohort != b.cohort:
        raise InvalidInput(
            f"report {a.id} is of cohort {a.cohort!r} and report {b.id} of {b.cohort!r}: "
            "only evaluations of one cohort compare"
        )
    table_a, table_b = fold_metrics(a), fold_metrics(b)
    folds_a, folds_b = sorted(set(table_a.fold)), sorted(set(table_b.fold))
    if a.folds != b.folds or folds_a != folds_b:
        raise InvalidInput(
            f"report {a.id} has {a.folds} folds ({len(folds_a)} scored) and report {b.id} "
            f"{b.folds} ({len(folds_b)} scored): only evaluations with the same folds compare"
        )
    keys = ["fold", "field", "method"]
    per_fold = table_a.merge(table_b, on=keys, suffixes=("_a", "_b"))
    per_fold = per_fold.rename(columns={"macro_f1_a": "a", "macro_f1_b": "b"})
    medians = per_fold.groupby(["field", "method"], sort=False)[["a", "b"]].median()
    order = {m: i for i, m in enumerate((*MODEL_METHODS, *BASELINES))}
    fields = list(dict.fromkeys(table_a.field))
    scores = sorted(
        (
            ComparedScore(field, method, float(row.a), float(row.b))
            for (field, method), row in medians.iterrows()
        ),
        key=lambda s: (fields.index(s.field), order.get(s.method, len(order)), s.method),
    )
    if not scores:
        raise InvalidInput(f"reports {a.id} and {b.id} share no field and method to compare")
    return Comparison(a, b, folds_a, scores, per_fold)
