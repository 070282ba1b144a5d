"""What the admin job pages show that the queue does not already hand over: the start-a-job
form read into the same parameters the JSON API takes, who asked for each job, and a job's log
with its tracebacks folded away."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.i18n import N_
from app.jobs.params import EPOCHS, FOLDS, JobCreate
from app.parsing import parse_int
from app.tables import Job, User
from model.config import PRESETS

JOB_KINDS = ("train", "evaluate", "reindex")
# Every kind as the pages name it (`|tr`); the fold jobs an evaluation fans out too.
KIND_LABELS = (N_("train"), N_("evaluate"), N_("evaluate_fold"), N_("reindex"))
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
        raise InvalidInput(N_("choose the kind of job: %(kinds)s"), kinds=", ".join(JOB_KINDS))
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


STAMPED_LINE = re.compile(r"^\d\d:\d\d:\d\d ", re.M)  # how `JobContext.log` starts a line
TRACEBACK = "Traceback (most recent call last):"


def split_traceback(log: str | None) -> tuple[str, str | None]:
    """(the log with its tracebacks cut out, the tracebacks): the page shows the one-line
    error and the log, and keeps the traceback folded away for whoever needs it."""
    if not log or TRACEBACK not in log:
        return log or "", None
    kept: list[str] = []
    traces: list[str] = []
    starts = [m.start() for m in STAMPED_LINE.finditer(log)]
    bounds = zip(starts or [0], [*starts[1:], len(log)], strict=True)
    for begin, end in bounds:
        entry = log[begin:end].rstrip("\n")
        (traces if TRACEBACK in entry.split("\n", 1)[0] else kept).append(entry)
    return "\n".join(kept), "\n".join(traces) or None
