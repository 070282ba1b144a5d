"""Evaluation reports on the admin screens: the rows, the per-field table of a summary, and the
files of a report folder, handed out by name only when the name is one the folder really holds
(figures) or one of a fixed list (downloads), so no request reaches outside the folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import NotFound
from app.i18n import N_, gettext
from app.tables import EvaluationReport
from model.evaluate import BASELINES, METHOD_NAMES, MODEL_METHODS

FIGURE_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.png$")
DOWNLOADS = {
    "metrics.csv": "text/csv; charset=utf-8",
    "per_class.csv": "text/csv; charset=utf-8",
    "retrieval.csv": "text/csv; charset=utf-8",
    "summary.md": "text/markdown; charset=utf-8",
}
# A best model mode this far under logistic regression is called worse (as summary.md does).
WORSE_MARGIN = 0.005
# model.evaluate.METHOD_NAMES' names, as the pages show them (`|tr`); summary.md keeps English.
METHOD_LABELS = (
    N_("served (calibrated)"),
    N_("CLIP top-1 text"),
    N_("CLIP top-k vote"),
    N_("CLIP multi-task head"),
    N_("CLIP embedding + linear probe"),
    N_("majority class"),
    N_("logistic regression"),
    N_("logistic regression, balanced"),
    N_("gradient boosting, balanced"),
    N_("reader vs reader"),
    N_("reader vs other readers' majority"),
)


def list_reports(session: Session, limit: int = 200) -> list[EvaluationReport]:
    query = select(EvaluationReport).order_by(EvaluationReport.id.desc()).limit(limit)
    return list(session.scalars(query))


def get_report(session: Session, report_id: int) -> EvaluationReport:
    row = session.get(EvaluationReport, report_id)
    if row is None:
        raise NotFound(N_("no evaluation report %(id)s"), id=report_id)
    return row


def report_for_job(session: Session, job_id: int) -> EvaluationReport | None:
    query = select(EvaluationReport).where(EvaluationReport.job_id == job_id)
    return session.scalars(query.order_by(EvaluationReport.id.desc())).first()


# --- the per-field table ----------------------------------------------------------------------
@dataclass(frozen=True)
class FieldRow:
    field: str
    scores: dict[str, float | None]  # method -> median macro-F1 across folds
    best: str | None  # the model's best prediction mode for the field
    gap: float | None  # best mode minus logistic regression (negative: the baseline wins)

    @property
    def worse_than_logreg(self) -> bool:
        return self.gap is not None and self.gap < -WORSE_MARGIN


@dataclass(frozen=True)
class SummaryTable:
    model_methods: list[str]
    baselines: list[str]
    rows: list[FieldRow]

    @property
    def methods(self) -> list[str]:
        return [*self.model_methods, *self.baselines]

    @property
    def worse(self) -> list[FieldRow]:
        return [row for row in self.rows if row.worse_than_logreg]


def summary_table(summary: dict[str, dict[str, float]]) -> SummaryTable:
    """`EvaluationReport.summary` (field -> method -> median macro-F1) as rows of a table with
    the model's modes first and the baselines beside them."""
    present = {method for scores in summary.values() for method in scores}
    model_methods = [m for m in MODEL_METHODS if m in present]
    baselines = [m for m in BASELINES if m in present]
    rows = []
    for field, scores in summary.items():
        values = {m: _number(scores.get(m)) for m in (*model_methods, *baselines)}
        modes = {m: v for m, v in values.items() if m in model_methods and v is not None}
        # the served read-out is declared before evaluation: it leads, never the best in hindsight
        best = "served" if "served" in modes else max(modes, key=modes.__getitem__, default=None)
        logreg = values.get("logreg")
        gap = modes[best] - logreg if best is not None and logreg is not None else None
        rows.append(FieldRow(field, values, best, gap))
    return SummaryTable(model_methods, baselines, rows)


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


# --- files of the report folder ---------------------------------------------------------------
@dataclass(frozen=True)
class Figure:
    name: str
    caption: str


def figures_dir(row: EvaluationReport) -> Path:
    return Path(row.path) / "figures"


def figure_names(row: EvaluationReport) -> list[str]:
    """The PNG files the report's figures folder holds (none when the folder is gone)."""
    folder = figures_dir(row)
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if FIGURE_NAME.match(p.name) and p.is_file() and not p.is_symlink()
    )


def figure_groups(row: EvaluationReport) -> list[tuple[str, list[Figure]]]:
    """The figures as the page shows them: the box plots, the confusion matrices field by field
    (the model's best mode beside logistic regression), the loss curves, anything else; titles
    and captions in the reader's language."""
    names = figure_names(row)
    confusions: dict[str, list[Figure]] = {}
    overview: list[Figure] = []
    other: list[Figure] = []
    for name in names:
        stem = name.removesuffix(".png")
        field, _, method = stem.removeprefix("confusion_").rpartition("_")
        if stem.startswith("confusion_") and field and method in METHOD_NAMES:
            # the baseline last, so it sits beside the model
            confusions.setdefault(field, []).append(Figure(name, gettext(method_name(method))))
        elif name == "boxplots.png":
            caption = gettext("Per-field macro precision / recall / F1 by fold")
            overview.insert(0, Figure(name, caption))
        elif name == "loss_curves.png":
            overview.append(Figure(name, gettext("Training loss per fold")))
        else:
            other.append(Figure(name, stem))
    groups: list[tuple[str, list[Figure]]] = []
    if overview:
        groups.append((gettext("Across folds"), overview))
    for field, figures in confusions.items():
        figures.sort(key=lambda f: f.name.endswith("_logreg.png"))
        title = gettext("Confusion matrices: %(field)s (all folds)") % {"field": field}
        groups.append((title, figures))
    if other:
        groups.append((gettext("Other figures"), other))
    return groups


def figure_path(row: EvaluationReport, name: str) -> Path:
    if name not in figure_names(row):
        raise NotFound(N_("report %(id)s has no figure %(name)s"), id=row.id, name=repr(name))
    return figures_dir(row) / name


def download_names(row: EvaluationReport) -> list[str]:
    folder = Path(row.path)
    return [name for name in DOWNLOADS if (folder / name).is_file()]


def download_path(row: EvaluationReport, name: str) -> tuple[Path, str]:
    """The file and its media type; NotFound for a name outside the list."""
    if name not in DOWNLOADS or name not in download_names(row):
        raise NotFound(
            N_("report %(id)s has no file %(name)s to download"), id=row.id, name=repr(name)
        )
    return Path(row.path) / name, DOWNLOADS[name]
