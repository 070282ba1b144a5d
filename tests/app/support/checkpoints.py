"""Small real checkpoints for the service tests: trained for two epochs on simulated or real
LIDC features."""

from __future__ import annotations

from pathlib import Path

from model.checkpoint import Checkpoint

FEATURE_DIM = 16


def build_small_checkpoint(folder: Path, encoder, preset_name: str, seed: int) -> Checkpoint:
    from model.checkpoint import build_checkpoint
    from model.config import preset
    from model.datasets.simulated import simulate_cohort
    from model.train import train

    cohort = simulate_cohort(60, None, seed=seed, feature_dim=FEATURE_DIM, signal=2.0)
    mcfg, tcfg = preset(
        preset_name, epochs=2, val_fraction=0.0, patience=0, seed=seed, embed_dim=32, ff_dim=64
    )
    classes = [len(f.values) for f in cohort.schema.fields]
    result = train(cohort, mcfg, tcfg, encoder, field_classes=classes)
    case_ids = cohort.cases["case_id"].astype(str).tolist()
    data = {"cohort": cohort.name, "simulated": True}
    ckpt = build_checkpoint(result, cohort, case_ids, cohort.schema, encoder, tcfg, data)
    ckpt.save(folder)
    return Checkpoint.load(folder)


HELD_OUT_PATIENT = "LIDC-IDRI-0001"  # not in lidc_checkpoint's training cases


def build_lidc_checkpoint(folder: Path, cohort, seed: int = 0) -> Checkpoint:
    """A small model on real LIDC features (extractor and outlines recorded), trained by the
    CLI's own recipe on every case of `cohort` but those of HELD_OUT_PATIENT."""
    import numpy as np

    from clipmed.cli import train_checkpoint

    held_out = np.flatnonzero(cohort.patients == HELD_OUT_PATIENT)
    small = {"epochs": 2, "val_fraction": 0.0, "patience": 0, "seed": seed}
    train_checkpoint(cohort, "lidc", small | {"embed_dim": 32, "ff_dim": 64}, folder, held_out)
    return Checkpoint.load(folder)
