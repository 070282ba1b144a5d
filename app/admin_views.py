"""What the admin screens show that the services do not already hand over: the start-a-job
form read into the same parameters the JSON API takes, who asked for each job, and the model
versions' metrics laid side by side."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.models import Job, ModelVersion, User
from app.overrides import EPOCHS
from app.parsing import parse_int
from app.schemas import FOLDS, JobCreate
from model.config import PRESETS
from model.evaluate import MODEL_METHODS

JOB_KINDS = ("train", "evaluate", "reindex")
_JOB_CREATE = TypeAdapter(JobCreate)


# --- the start-a-job form ---------------------------------------------------------------------
@dataclass
class JobForm:
    """The form's fields as typed, so a refused form comes back as it was sent."""

    kind: str = "evaluate"
    cohort: str = "lidc"
    preset: str = "lidc"
    folds: str = "5"
    epochs: str = ""
    activate: bool = False
    include_corrections: bool = True

    @property
    def presets(self) -> list[str]:
        return list(PRESETS)

    @property
    def kinds(self) -> tuple[str, ...]:
        return JOB_KINDS


def job_params(form: JobForm):
    """The form as TrainParams, EvaluateParams or ReindexParams (the JSON API's validation);
    InvalidInput naming the problem otherwise."""
    if form.kind not in JOB_KINDS:
        raise InvalidInput(f"choose the kind of job: {', '.join(JOB_KINDS)}")
    data: dict = {"kind": form.kind}
    if form.kind in ("train", "evaluate"):
        data |= {"cohort": form.cohort.strip(), "preset": form.preset}
        if form.epochs.strip():
            data["overrides"] = {"epochs": parse_int(form.epochs, "epochs", *EPOCHS)}
    if form.kind == "evaluate" and form.folds.strip():
        data["folds"] = parse_int(form.folds, "folds", *FOLDS)
    if form.kind == "train":
        data["activate"] = form.activate
    if form.kind in ("train", "reindex"):
        data["include_corrections"] = form.include_corrections
    try:
        return _JOB_CREATE.validate_python(data)
    except ValidationError as e:
        raise InvalidInput(_problems(e, form.kind)) from None


def _problems(error: ValidationError, kind: str) -> str:
    problems = []
    for item in error.errors()[:3]:
        where = [str(part) for part in item["loc"]]
        if where[:1] == [kind]:  # the union's tag
            where = where[1:]
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{'.'.join(where)}: {message}" if where else message)
    return "; ".join(problems)


# --- jobs -------------------------------------------------------------------------------------
def usernames(session: Session, jobs: Iterable[Job]) -> dict[int, str]:
    """requested_by id -> username, for the jobs' "who" column."""
    ids = {job.requested_by for job in jobs if job.requested_by is not None}
    if not ids:
        return {}
    rows = session.execute(select(User.id, User.username).where(User.id.in_(ids)))
    return {user_id: name for user_id, name in rows}


# --- model versions side by side ----------------------------------------------------------------
# train's validation metrics: "val/<field>/<mode>_macro_f1" (model.evaluate.validation_metrics)
STAMPED_LINE = re.compile(r"^\d\d:\d\d:\d\d ", re.M)  # how `JobContext.log` starts a line
TRACEBACK = "Traceback (most recent call last):"


def split_traceback(log: str | None) -> tuple[str, str | None]:
    """(the log with its tracebacks cut out, the tracebacks): the page shows the one-line
    error and the log, and keeps the traceback folded away for whoever needs it."""
    if not log or TRACEBACK not in log:
        return log or "", None
    kept, traces = [], []
    starts = [m.start() for m in STAMPED_LINE.finditer(log)]
    bounds = zip(starts or [0], [*starts[1:], len(log)], strict=True)
    for begin, end in bounds:
        entry = log[begin:end].rstrip("\n")
        (traces if TRACEBACK in entry.split("\n", 1)[0] else kept).append(entry)
    return "\n".join(kept), "\n".join(traces) or None


COUNT_METRICS = {"cases"}
FIELD_METRIC = re.compile(r"^val/(?P<field>[^/]+)/(?P<mode>[^/]+)_macro_f1$")


@dataclass(frozen=True)
class MetricRow:
    name: str
    values: list[float | None]  # one per version, in the comparison's order

    @property
    def is_count(self) -> bool:
        """A number of things (e.g. "val/cases"), shown as a whole number, not a score."""
        return self.name.rsplit("/", 1)[-1] in COUNT_METRICS

    @property
    def best(self) -> float | None:
        present = [v for v in self.values if v is not None]
        return max(present) if len(present) > 1 else None


@dataclass
class MetricsComparison:
    versions: list[str]
    by_mode: dict[str, list[MetricRow]] = field(default_factory=dict)  # mode -> field rows
    other: list[MetricRow] = field(default_factory=list)  # any other key, e.g. val/cases

    @property
    def empty(self) -> bool:
        return not self.by_mode and not self.other


def compare_metrics(versions: list[ModelVersion]) -> MetricsComparison:
    """Fields x versions, one table per prediction mode, from each version's flat metrics."""
    names = [v.version for v in versions]
    per_mode: dict[str, dict[str, list[float | None]]] = {}
    other: dict[str, list[float | None]] = {}
    for column, version in enumerate(versions):
        for key, value in (version.metrics or {}).items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            match = FIELD_METRIC.match(key)
            if match:
                mode = per_mode.setdefault(match["mode"], {})
                row = mode.setdefault(match["field"], [None] * len(versions))
            else:
                row = other.setdefault(key, [None] * len(versions))
            row[column] = float(value)
    order = [m for m in MODEL_METHODS if m in per_mode] + sorted(set(per_mode) - {*MODEL_METHODS})
    return MetricsComparison(
        names,
        {
            mode: [MetricRow(f, values) for f, values in sorted(per_mode[mode].items())]
            for mode in order
        },
        [MetricRow(key, values) for key, values in sorted(other.items())],
    )
