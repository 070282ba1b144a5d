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
from app.i18n import N_
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
        raise NotFound(
            N_("report %(id)s has no metrics.csv (its folder %(path)s moved?)"),
            id=report.id,
            path=report.path,
        )
    try:
        table = pd.read_csv(path, usecols=list(COLUMNS))
    except (ValueError, pd.errors.ParserError) as e:
        raise InvalidInput(
            N_("report %(id)s's metrics.csv cannot be read: %(error)s"), id=report.id, error=e
        ) from None
    table = table.dropna(subset=["macro_f1"])
    return table.astype({"fold": int, "field": str, "method": str, "macro_f1": float})


def compare_reports(session: Session, a_id: int, b_id: int) -> Comparison:
    """NotFound for a missing report or metrics file; InvalidInput when the two are not of the
    same cohort and folds."""
    a, b = get_report(session, a_id), get_report(session, b_id)
    if a.cohort != b.cohort:
        raise InvalidInput(
            N_(
                "report %(a)s is of cohort %(cohort_a)s and report %(b)s of %(cohort_b)s: "
                "only evaluations of one cohort compare"
            ),
            a=a.id,
            cohort_a=repr(a.cohort),
            b=b.id,
            cohort_b=repr(b.cohort),
        )
    table_a, table_b = fold_metrics(a), fold_metrics(b)
    folds_a, folds_b = sorted(set(table_a.fold)), sorted(set(table_b.fold))
    if a.folds != b.folds or folds_a != folds_b:
        raise InvalidInput(
            N_(
                "report %(a)s has %(folds_a)s folds (%(scored_a)s scored) and report %(b)s "
                "%(folds_b)s (%(scored_b)s scored): only evaluations with the same folds compare"
            ),
            a=a.id,
            folds_a=a.folds,
            scored_a=len(folds_a),
            b=b.id,
            folds_b=b.folds,
            scored_b=len(folds_b),
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
        raise InvalidInput(
            N_("reports %(a)s and %(b)s share no field and method to compare"), a=a.id, b=b.id
        )
    return Comparison(a, b, folds_a, scores, per_fold)
