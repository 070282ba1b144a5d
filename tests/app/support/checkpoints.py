"""Small real checkpoints for the service tests: trained for two epochs on simulated or real
LIDC features."""

from __future__ import annotations

from pathlib import Path

from model.checkpoint import Checkpoint

FEATURE_DIM = 16


def build_small_checkpoint(folder: Path, encoder, preset_name: str, seed: int) -> Checkpoint:
    from model.config import preset
    from model.datasets.simulated import simulate_cohort
    from model.recipe import train_checkpoint

    cohort = simulate_cohort(60, None, seed=seed, feature_dim=FEATURE_DIM, signal=2.0)
    mcfg, tcfg = preset(
        preset_name, epochs=2, val_fraction=0.0, patience=0, seed=seed, embed_dim=32, ff_dim=64
    )
    data = {"cohort": cohort.name, "simulated": True}
    train_checkpoint(cohort, mcfg, tcfg, encoder, data)[0].save(folder)
    return Checkpoint.load(folder)


HELD_OUT_PATIENT = "LIDC-IDRI-0001"  # not in lidc_checkpoint's training cases


def build_lidc_checkpoint(folder: Path, cohort, seed: int = 0) -> Checkpoint:
    """A small model on real LIDC features (extractor and outlines recorded), trained by the
    CLI's own command on every case of `cohort` but those of HELD_OUT_PATIENT."""
    import numpy as np

    from clipmed.cli import train_cohort

    held_out = np.flatnonzero(cohort.patients == HELD_OUT_PATIENT)
    small = {"epochs": 2, "val_fraction": 0.0, "patience": 0, "seed": seed}
    train_cohort(cohort, "lidc", small | {"embed_dim": 32, "ff_dim": 64}, folder, held_out)
    return Checkpoint.load(folder)
